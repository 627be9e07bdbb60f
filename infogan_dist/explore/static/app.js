// The explorer page: controls -> query string -> /api/image (PNG) and /api/reproduce.
// No framework, no build step, nothing fetched from outside this server.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { ckpt: null, info: null, gen: "ema", seed: 0, codes: {},
                sweep: null, rows: 6, cols: 10, span: 2 };
// for tests and benchmarks: what is shown, for which query, and how long it took
const explore = window.explore = {
  state, timings: [], blob: null, shown: "", reproduced: "", traversalShown: "",
  traversalReproduced: "", checkpoints: [], busy: 0,
};

// --- queries ------------------------------------------------------------------------
function imageQuery() {
  const p = new URLSearchParams({ ckpt: state.ckpt, gen: state.gen, seed: String(state.seed) });
  for (const c of state.info.codes) p.set(c.name, String(state.codes[c.name]));
  return p.toString();
}

function sweptCode() {
  return state.info.codes.find((c) => c.name === state.sweep);
}

function traversalQuery() {
  const p = new URLSearchParams(imageQuery());
  p.delete(state.sweep);
  p.set("sweep", state.sweep);
  p.set("rows", String(state.rows));
  if (sweptCode().kind === "continuous") {
    p.set("cols", String(state.cols));
    p.set("span", String(state.span));
  }
  return p.toString();
}

// --- status line --------------------------------------------------------------------
function showError(text) {
  $("status").textContent = text;
  $("status").className = "error";
}

function showStatus(text) {
  $("status").textContent = text;
  $("status").className = "";
}

async function getJSON(url) {
  const r = await fetch(url);
  if (!r.ok) throw new Error(await r.text());
  return r.json();
}

// --- one picture at a time per view: a move during a request is drawn right after it --
function painter(imgId, queryOf, onShown, timed) {
  let busy = false, again = false;
  const paint = async () => {
    if (busy) { again = true; return; }
    busy = true;
    explore.busy++;
    const query = queryOf();
    // timed: from the slider's input event (or now) to the decoded image on the page
    const t0 = (timed && explore.inputAt) || performance.now();
    if (timed) explore.inputAt = null;
    try {
      const r = await fetch(query);
      if (!r.ok) {
        showError(await r.text());
      } else {
        const blob = await r.blob();
        const img = $(imgId);
        const old = img.src;
        img.src = URL.createObjectURL(blob);
        await img.decode();
        if (old.startsWith("blob:")) URL.revokeObjectURL(old);
        onShown(query, blob, performance.now() - t0);
        if ($("status").className === "error") showStatus("");
      }
    } catch (e) {
      showError(String(e.message || e));
    } finally {
      busy = false;
      explore.busy--;
    }
    if (again) { again = false; paint(); }
  };
  return paint;
}

const paintImage = painter("image", () => "/api/image?" + imageQuery(), (query, blob, ms) => {
  explore.blob = blob;
  explore.shown = query.split("?")[1];
  explore.timings.push(ms);
  reproduce("image", explore.shown, "command", "latent");
}, true);

const paintTraversal = painter("traversal", () => "/api/traversal?" + traversalQuery(),
  (query) => {
    explore.traversalShown = query.split("?")[1];
    traversalCaption();
    reproduce("traversal", explore.traversalShown, "traversal-command", null);
  }, false);

function traversalCaption() {
  const code = sweptCode();
  let text;
  if (code.kind === "categorical") {
    text = "columns: " + Array.from({ length: code.classes }, (_, k) => categoryText(code, k))
      .join(", ");
  } else {
    text = `columns: ${code.name} from ${-state.span} to ${state.span} in ${state.cols} steps`;
  }
  $("traversal-caption").textContent = text;
}

let traversalTimer = null;
function update() {
  paintImage();
  clearTimeout(traversalTimer);  // a traversal is many images: not on every slider step
  traversalTimer = setTimeout(paintTraversal, 150);
}

async function reproduce(view, query, commandId, latentId) {
  explore.busy++;
  try {
    const body = await getJSON(`/api/reproduce?view=${view}&${query}`);
    $(commandId).textContent = body.command;
    if (latentId) $(latentId).textContent = JSON.stringify(body.latent, null, 1);
    explore[view === "image" ? "reproduced" : "traversalReproduced"] = query;
  } catch (e) {
    showError(String(e.message || e));
  } finally {
    explore.busy--;
  }
}

// --- controls -----------------------------------------------------------------------
function categoryText(code, k) {
  const labels = state.info.labels;
  const m = labels.status === "ready" ? labels.codes[code.name].mapping[k] : undefined;
  return m === undefined ? String(k) : `${k} \u2192 label ${m === null ? "none" : m}`;
}

function buildControls() {
  const box = $("codes");
  box.replaceChildren();
  for (const code of state.info.codes) {
    const row = document.createElement("div");
    row.className = "code";
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = code.name;
    row.append(name);
    if (code.kind === "categorical") {
      const old = state.codes[code.name];
      state.codes[code.name] = Number.isInteger(old) && old < code.classes ? old : 0;
      const sel = document.createElement("select");
      sel.id = `code-${code.name}`;
      for (let k = 0; k < code.classes; k++) sel.append(new Option(categoryText(code, k), k));
      sel.value = state.codes[code.name];
      sel.addEventListener("change", () => {
        state.codes[code.name] = Number(sel.value);
        update();
      });
      row.append(sel);
    } else {
      const old = state.codes[code.name];
      state.codes[code.name] = typeof old === "number" && Math.abs(old) <= code.limit ? old : 0;
      const slider = document.createElement("input");
      Object.assign(slider, { type: "range", id: `code-${code.name}`, min: -code.limit,
                              max: code.limit, step: 0.01, className: "cont" });
      const pct = (v) => `${(100 * (v + code.limit)) / (2 * code.limit)}%`;
      slider.style.setProperty("--lo", pct(code.prior[0]));
      slider.style.setProperty("--hi", pct(code.prior[1]));
      slider.value = state.codes[code.name];
      const out = document.createElement("output");
      out.textContent = String(state.codes[code.name]);
      slider.addEventListener("input", () => {
        explore.inputAt = performance.now();
        state.codes[code.name] = Number(slider.value);
        out.textContent = slider.value;
        update();
      });
      const note = document.createElement("div");
      note.className = "range-note";
      note.textContent = `shaded: the training range ${code.prior[0]}..${code.prior[1]}; ` +
                         `beyond it to \u00b1${code.limit}`;
      row.append(slider, out, note);
    }
    box.append(row);
  }
  const sweep = $("sweep");
  sweep.replaceChildren(...state.info.codes.map((c) => new Option(
    c.kind === "categorical" ? `${c.name} (all categories)` : c.name, c.name)));
  if (!state.info.codes.some((c) => c.name === state.sweep)) {
    const cont = state.info.codes.find((c) => c.kind === "continuous");
    state.sweep = (cont || state.info.codes[0]).name;
  }
  sweep.value = state.sweep;
  showSweepKind();
  labelsNote();
}

function showSweepKind() {
  const cont = sweptCode().kind === "continuous";
  for (const el of document.querySelectorAll(".cont-only")) el.hidden = !cont;
}

function labelsNote() {
  const l = state.info.labels;
  const acc = l.status === "ready" ? Object.entries(l.codes)
    .map(([n, c]) => `${n} ${(100 * c.accuracy).toFixed(1)}%`).join(", ") : "";
  $("labels-note").textContent = {
    pending: "Naming the categories from the run's labelled data...",
    ready: `Categories named by the mapping of infogan eval on ${l.images} images of ` +
           `${l.data} (accuracy ${acc}).`,
    none: `Categories unnamed: ${l.reason}.`,
  }[l.status];
}

async function pollLabels(id) {
  while (state.ckpt === id && state.info.labels.status === "pending") {
    await new Promise((done) => setTimeout(done, 1000));
    const info = await getJSON(`/api/info?ckpt=${encodeURIComponent(id)}`);
    if (state.ckpt !== id) return;
    state.info.labels = info.labels;
  }
  if (state.ckpt === id) {
    for (const code of state.info.codes.filter((c) => c.kind === "categorical")) {
      const sel = $(`code-${code.name}`);
      [...sel.options].forEach((o, k) => { o.textContent = categoryText(code, k); });
    }
    labelsNote();
    if (explore.traversalShown) traversalCaption();
  }
}

async function selectCheckpoint(id) {
  explore.busy++;  // the page is not settled until the new checkpoint's controls are built
  try {
    const info = await getJSON(`/api/info?ckpt=${encodeURIComponent(id)}`);
    state.ckpt = id;
    state.info = info;
    $("ckpt").value = id;
    $("ema").disabled = !info.ema;
    $("ema").title = info.ema ? "the EMA of G; off: the trained G" : "this checkpoint has no EMA";
    buildControls();
    update();
    if (info.labels.status === "pending") pollLabels(id);
  } catch (e) {
    showError(String(e.message || e));
  } finally {
    explore.busy--;
  }
}

async function refreshCheckpoints() {
  let body;
  try {
    body = await getJSON("/api/checkpoints");
  } catch (e) {
    showError(`the server does not answer (${e.message || e})`);
    return;
  }
  const ids = body.checkpoints.map((c) => c.id);
  const sel = $("ckpt");
  if ([...sel.options].map((o) => o.value).join() !== ids.join()) {
    sel.replaceChildren(...body.checkpoints.map((c) => new Option(
      `step ${c.step}${c.ema ? "" : " (no EMA)"}`, c.id)));
    if (state.ckpt && ids.includes(state.ckpt)) sel.value = state.ckpt;
  }
  explore.checkpoints = ids;
  if (!state.ckpt || !ids.includes(state.ckpt)) await selectCheckpoint(body.default);
}

function wire() {
  $("ckpt").addEventListener("change", () => selectCheckpoint($("ckpt").value));
  $("ema").addEventListener("change", () => {
    state.gen = $("ema").checked ? "ema" : "raw";
    update();
  });
  $("seed").addEventListener("change", () => {
    state.seed = $("seed").value;  // sent as typed: the server says what is wrong with it
    update();
  });
  $("new-noise").addEventListener("click", () => {
    state.seed = Math.floor(Math.random() * 2 ** 32);
    $("seed").value = state.seed;
    update();
  });
  $("new-codes").addEventListener("click", () => {
    for (const code of state.info.codes) {
      state.codes[code.name] = code.kind === "categorical"
        ? Math.floor(Math.random() * code.classes)
        : Math.round(200 * Math.random() - 100) / 100;  // the prior U(-1, 1), slider steps
    }
    buildControls();
    update();
  });
  $("sweep").addEventListener("change", () => {
    state.sweep = $("sweep").value;
    showSweepKind();
    update();
  });
  for (const id of ["rows", "cols", "span"]) {
    $(id).addEventListener("change", () => {
      state[id] = $(id).value;
      update();
    });
  }
  $("copy").addEventListener("click", () => navigator.clipboard.writeText($("command").textContent));
}

wire();
refreshCheckpoints();
setInterval(refreshCheckpoints, 2000);  // a checkpoint saved by a running training appears
