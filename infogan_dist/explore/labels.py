"""What each category of a categorical code stands for: the label that `infogan eval`'s
mapping gives it (scores.unsupervised_accuracy on Q's argmax over labelled images),
computed here from the run's data.eval_shards (else data.shards), the first
`images` of them, in a background thread so the page does not wait for it. Nothing is
read from the run directory for this: `infogan eval` prints its mapping but does not
store it."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch

from .catalog import Entry

DEFAULT_IMAGES = 2000  # labelled images per checkpoint: a stable mapping, seconds on a CPU


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())[:300] or type(e).__name__


def compute(entry: Entry, device: torch.device, images: int) -> dict[str, Any]:
    """{"status": "ready", "data", "images", "codes": {name: {"mapping", "accuracy"}}}, or
    {"status": "none", "reason"} when the run has no labelled data to say it."""
    from ..checkpoint import load_for_inference, read_config
    from ..data import stores
    from ..data.labelled import eval_shards, load_labelled
    from ..scores import predict_real, unsupervised_accuracy

    if not entry.space.categorical:
        return {"status": "none", "reason": "no categorical code"}
    cfg = read_config(entry.path)
    spec = eval_shards(cfg)
    try:
        stores.configure(cfg.data)
        x, y, num_labels = load_labelled(spec, images)
    except Exception as e:  # missing, unlabelled or unreachable shards: said on the page
        return {"status": "none", "reason": f"data.eval_shards {spec}: {_one_line(e)}"}
    loaded = load_for_inference(entry.path, with_d=True, device=device)
    if list(x.shape[1:]) != list(loaded.image_shape):
        return {"status": "none", "reason": f"{spec} holds images of shape "
                f"{list(x.shape[1:])}, the generator makes {list(loaded.image_shape)}"}
    assert loaded.D is not None
    preds = predict_real(loaded.D, loaded.space, x, device)
    codes = {}
    for i, (name, k) in enumerate(zip(entry.space.cat_names, entry.space.categorical,
                                      strict=True)):
        acc, mapping, _ = unsupervised_accuracy(preds[:, i], y.numpy(), k, num_labels)
        codes[name] = {"mapping": mapping, "accuracy": acc}
    return {"status": "ready", "data": spec, "images": len(x), "codes": codes}


class Labels:
    """The mapping of each checkpoint, computed once, one checkpoint at a time."""

    def __init__(self, device: torch.device, images: int = DEFAULT_IMAGES):
        self.device, self.images = device, images
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="labels")
        self._lock = threading.Lock()
        self._done: dict[tuple[str, str], dict[str, Any]] = {}
        self._queued: set[tuple[str, str]] = set()
        # set once the first image is served: the labels (data decoding, D forwards) do
        # not compete with the start for the CPU
        self.go = threading.Event()
        self.closed = False

    def get(self, entry: Entry) -> dict[str, Any]:
        """The result, or {"status": "pending"} while it is computed (started here)."""
        if self.images <= 0:
            return {"status": "none", "reason": "switched off (--eval-images 0)"}
        key = (entry.id, str(entry.path))
        with self._lock:
            if key in self._done:
                return self._done[key]
            if key not in self._queued:
                self._queued.add(key)
                self._pool.submit(self._run, key, entry)
        return {"status": "pending"}

    def _run(self, key: tuple[str, str], entry: Entry) -> None:
        self.go.wait()
        if self.closed:
            return
        try:
            result = compute(entry, self.device, self.images)
        except Exception as e:  # a damaged D is a note on the page, not a dead server
            result = {"status": "none", "reason": _one_line(e)}
        with self._lock:
            self._done[key] = result

    def close(self) -> None:
        self.closed = True
        self.go.set()  # a worker still waiting for the first image ends now
        self._pool.shutdown(wait=False, cancel_futures=True)
