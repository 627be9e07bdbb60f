"""The report: gpu-check.json (after every part) rendered as gpu-check.md, and the
packed logs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def pack_logs(scratch: Path, out: Path) -> str:
    """OUT/gpu-check-logs.tar.gz: every run's log, metrics.jsonl and config.yaml (small;
    the run directories themselves stay in scratch)."""
    import tarfile

    dest = out / "gpu-check-logs.tar.gz"
    try:
        with tarfile.open(dest, "w:gz") as tar:
            for f in sorted(scratch.rglob("*")):
                if f.is_file() and (f.suffix in (".log", ".json") or f.name in (
                        "metrics.jsonl", "config.yaml")) and not {"checkpoints", "site"} & set(
                        f.relative_to(scratch).parts):
                    tar.add(f, arcname=str(f.relative_to(scratch)))
        return str(dest)
    except Exception as e:  # noqa: BLE001 - the report matters more than the logs
        return f"not written: {e}"


def write_report(out: Path, report: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "gpu-check.json.partial"
    tmp.write_text(json.dumps(report, indent=1, default=str))
    tmp.replace(out / "gpu-check.json")
    (out / "gpu-check.md").write_text(render_markdown(report))


def _fmt(v: Any, digits: int = 1) -> str:
    if isinstance(v, float):
        return f"{v:,.{digits}f}"
    return "" if v is None else str(v)


def render_markdown(r: dict) -> str:
    m = r.get("machine") or {}
    lines = [f"# gpu-check ({r['mode']})", ""]
    if not r["cuda"]:
        lines += ["**no CUDA**: this machine has no CUDA GPU, so no GPU figure was taken. "
                  "The parts ran as a CPU self-test (tiny sizes; fp32 in place of fp16) to "
                  "exercise their code.", ""]
    budget = (f"of a {r['budget_s']:.0f} s budget" if r.get("budget_s") is not None
              else "(no budget: the self-test waits for every part)")
    lines += [f"- date: {r['started']} (UTC), {r.get('elapsed_s', 0):.0f} s {budget}",
              f"- GPU: {m.get('gpu', 'none')}; nvidia-smi: {m.get('nvidia_smi', 'n/a')}",
              f"- torch {m.get('torch', '?')} (CUDA {m.get('torch_cuda')}), accelerate "
              f"{m.get('accelerate', '?')}, Python {m.get('python', '?')}, host "
              f"{m.get('host', '?')}",
              f"- data: {r.get('data', '?')}; wheels: {r.get('wheels', {})}",
              f"- command: `{r['command']}`", "",
              "| part | status | seconds | budget | note |", "| --- | --- | ---: | ---: | --- |"]
    for p in r["parts"]:
        note = (p.get("error") or "").splitlines()[0][:160] if p.get("error") else ""
        if not note and isinstance(p.get("result"), dict) and "skipped" in p["result"]:
            note = p["result"]["skipped"]
        lines.append(f"| {p['name']} | {p['status']} | {_fmt(p.get('seconds'))} | "
                     f"{_fmt(p.get('budget_s'), 0)} | {note} |")
    lines.append("")
    by = {p["name"]: p for p in r["parts"]}
    lines += _targets(r, by)
    tp = (by.get("throughput") or {}).get("result") or {}
    if tp.get("points"):
        lines += ["## Throughput (images/s, global batch, one device)", "",
                  f"Trainer: `python train.py`, `perf/images_per_s` of metrics.jsonl after "
                  f"a {tp['warmup_steps']}-step warm-up interval, {tp['measured_steps']} steps "
                  "timed. Eager: `benchmarks/eager_loop.py` (no Accelerate, no data layer), "
                  "same networks and update, same device, same run.", "",
                  "| config | batch | precision | trainer | eager | trainer / eager |",
                  "| --- | ---: | --- | ---: | ---: | ---: |"]
        for pt in tp["points"]:
            prec = "fp32" if pt["precision"] == "no" else pt["precision"]
            lines.append(f"| {pt['config']} | {pt['batch']} | {prec} | "
                         f"{_fmt(pt.get('trainer_images_per_s')) or pt.get('trainer_error')} | "
                         f"{_fmt(pt.get('eager_images_per_s')) or pt.get('eager_error')} | "
                         f"{_fmt(pt.get('ratio'), 3)} |")
        if tp.get("not_run_budget"):
            lines.append("")
            lines.append(f"Not run (budget): {len(tp['not_run_budget'])} points: " + ", ".join(
                f"{Path(x['config']).stem}/{x['batch']}/{x['precision']}"
                for x in tp["not_run_budget"]))
        lines.append("")
    for name in ("time_to_95", "fp16_overflow", "fp16_resume", "host_syncs", "precisions",
                 "compile", "environment"):
        p = by.get(name)
        if not p:
            continue
        lines += [f"## {name}: {p['status']}", ""]
        if p.get("error"):
            lines += ["```", p["error"][:3000], "```", ""]
        if p.get("result") is not None:
            lines += ["```json", json.dumps(p["result"], indent=1, default=str)[:6000], "```",
                      ""]
    return "\n".join(lines) + "\n"


def _targets(r: dict, by: dict) -> list[str]:
    if not r["cuda"]:
        return ["Targets (trainer >= 0.9x eager at batch 64 fp32; time to 95% < 60 s; fp16 "
                "and bf16 in the accuracy band of fp32): not measured, no CUDA.", ""]
    out = ["## Targets", ""]
    tp = (by.get("throughput") or {}).get("result") or {}
    r64 = [p for p in tp.get("points", []) if p["batch"] == 64 and p["precision"] == "no"]
    for p in r64:
        ratio = p.get("ratio")
        out.append(f"- trainer / eager, {p['config']} batch 64 fp32: {_fmt(ratio, 3)} "
                   f"(target >= 0.9: {'met' if ratio and ratio >= 0.9 else 'NOT met'})")
    t95 = (by.get("time_to_95") or {}).get("result") or {}
    first = t95.get("first")
    if first:
        out.append(f"- time to 95% (c1, configs/mnist.yaml fp32, seed 0): {first['train_s']:.1f}"
                   f" s, {first['images']:,} images, step {first['step']} (target < 60 s: "
                   f"{'met' if first['train_s'] < 60 else 'NOT met'})")
    else:
        out.append(f"- time to 95%: not reached (best {t95.get('best_acc')})")
    out.append("- fp16 / bf16 accuracy band: only time_to_95 in fp32 is run in this budget; "
               "precisions checks that every precision trains with finite losses")
    return [*out, ""]
