"""Feature networks for FID and KID, and `infogan train-features`.

    infogan train-features --data data/mnist/test10k --out features/mnist
    infogan train-features --data data/fashion_mnist/train --out features/fashion --epochs 3

Two kinds, picked by `--features` (eval) or `eval.features` (training):
- a directory written by `infogan train-features`: a small conv classifier trained on
  labelled shards (features.safetensors + features.json); its 128-d penultimate layer is
  the feature. FID on these features is on ANOTHER SCALE than the Inception FID of papers
  (other features, other dimension): compare numbers only with the same feature directory.
- `inception`: the standard FID Inception-v3 (pytorch-fid's architecture: torchvision's
  inception_v3 with the TF-ported pooling blocks, 2048-d pool3 features, inputs resized
  to 299 x 299, grey images repeated to RGB). Its weights are read from the safetensors
  file `eval.inception_weights` / `--inception-weights`; nothing is downloaded. Convert
  pytorch-fid's pt_inception-2015-12-05-6726825d.pth once where it is available (a plain
  state dict: torch.load(weights_only=True) reads it without running code), e.g.
  `safetensors.torch.save_file(torch.load(PTH, weights_only=True), OUT)`.

A feature network's `identity` (kind + sha256 of its weights file) keys the cache of the
real statistics (fid.py), so other weights never reuse a cached set.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

WEIGHTS, SPEC = "features.safetensors", "features.json"
CLASSIFIER_DIM = 128


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# --- the project's own classifier ------------------------------------------------------
class SmallClassifier(nn.Module):
    """Two conv blocks, a 4 x 4 average pool (any image size), a 128-d layer (the
    features) and the class logits. Inputs in [-1, 1] like the shards' to_float."""

    def __init__(self, in_channels: int, classes: int, width: int = 32):
        super().__init__()
        self.trunk = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.AdaptiveAvgPool2d(4), nn.Flatten(),
            nn.Linear(2 * width * 16, CLASSIFIER_DIM), nn.ReLU(),
        )
        self.head = nn.Linear(CLASSIFIER_DIM, classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.trunk(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(x))


# --- the FID Inception (pytorch-fid's blocks) ------------------------------------------
def _fid_blocks():
    from torchvision.models import inception as tv

    class FIDInceptionA(tv.InceptionA):
        """TF's average pool does not count the zero padding."""

        def forward(self, x):
            b1 = self.branch1x1(x)
            b5 = self.branch5x5_2(self.branch5x5_1(x))
            b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
            bp = self.branch_pool(F.avg_pool2d(x, 3, 1, 1, count_include_pad=False))
            return torch.cat([b1, b5, b3, bp], 1)

    class FIDInceptionC(tv.InceptionC):
        def forward(self, x):
            b1 = self.branch1x1(x)
            b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
            bd = self.branch7x7dbl_1(x)
            bd = self.branch7x7dbl_5(self.branch7x7dbl_4(self.branch7x7dbl_3(
                self.branch7x7dbl_2(bd))))
            bp = self.branch_pool(F.avg_pool2d(x, 3, 1, 1, count_include_pad=False))
            return torch.cat([b1, b7, bd, bp], 1)

    class FIDInceptionE(tv.InceptionE):
        pool = "avg"  # Mixed_7b: average pool without padding; Mixed_7c: max pool (TF bug)

        def forward(self, x):
            b1 = self.branch1x1(x)
            b3 = self.branch3x3_1(x)
            b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
            bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
            bd = torch.cat([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], 1)
            pooled = (F.max_pool2d(x, 3, 1, 1) if self.pool == "max"
                      else F.avg_pool2d(x, 3, 1, 1, count_include_pad=False))
            return torch.cat([b1, b3, bd, self.branch_pool(pooled)], 1)

    class FIDInceptionE2(FIDInceptionE):
        pool = "max"

    return tv, FIDInceptionA, FIDInceptionC, FIDInceptionE, FIDInceptionE2


class FIDInception(nn.Module):
    """pytorch-fid's FID Inception-v3 up to pool3 (2048-d). State names are torchvision's
    (fc with 1008 classes, no aux head), those of pt_inception-2015-12-05."""

    dim = 2048

    def __init__(self):
        super().__init__()
        tv, A, C, E1, E2 = _fid_blocks()
        net = tv.Inception3(num_classes=1008, aux_logits=False, init_weights=False)
        net.Mixed_5b, net.Mixed_5c, net.Mixed_5d = A(192, 32), A(256, 64), A(288, 64)
        net.Mixed_6b, net.Mixed_6c = C(768, 128), C(768, 160)
        net.Mixed_6d, net.Mixed_6e = C(768, 160), C(768, 192)
        net.Mixed_7b, net.Mixed_7c = E1(1280), E2(2048)
        self.net = net

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """x in [-1, 1], any size, 1 or 3 channels -> [n, 2048]."""
        if x.shape[1] == 1:
            x = x.repeat(1, 3, 1, 1)
        x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        n = self.net
        for block in (n.Conv2d_1a_3x3, n.Conv2d_2a_3x3, n.Conv2d_2b_3x3, n.maxpool1,
                      n.Conv2d_3b_1x1, n.Conv2d_4a_3x3, n.maxpool2, n.Mixed_5b, n.Mixed_5c,
                      n.Mixed_5d, n.Mixed_6a, n.Mixed_6b, n.Mixed_6c, n.Mixed_6d, n.Mixed_6e,
                      n.Mixed_7a, n.Mixed_7b, n.Mixed_7c):
            x = block(x)
        return F.adaptive_avg_pool2d(x, 1).flatten(1)

    def state_dict_for_file(self) -> dict[str, torch.Tensor]:
        return {k: v.contiguous() for k, v in self.net.state_dict().items()}

    def load_file_state(self, state: dict[str, torch.Tensor]) -> None:
        self.net.load_state_dict(state)


# --- loading ---------------------------------------------------------------------------
@dataclass
class FeatureNet:
    """A feature network ready to use: `net.features(x in [-1, 1]) -> [n, dim]`."""

    net: nn.Module
    dim: int
    identity: str  # kind:sha256 of the weights; keys the real-statistics cache
    image_shape: list[int] | None  # what it was trained on (None: any, resized)

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.image_shape is not None and list(x.shape[1:]) != self.image_shape:
            raise ValueError(f"the feature network takes {self.image_shape} images, got "
                             f"{list(x.shape[1:])}; train one on these images "
                             "(infogan train-features) or use --features inception")
        return self.net.features(x).float()

    def to(self, device: torch.device | str) -> FeatureNet:
        self.net.to(device).eval()
        return self


def _read_safetensors(path: Path, what: str) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.is_file():
        raise ValueError(f"{what} {path} does not exist")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise ValueError(f"{path}: unreadable safetensors file ({' '.join(str(e).split())})") \
            from None


def _load_into(module: nn.Module, state: dict[str, torch.Tensor], path: Path, what: str) -> None:
    own = module.state_dict()
    if own.keys() != state.keys() or any(own[k].shape != state[k].shape for k in own):
        missing, extra = sorted(own.keys() - state.keys()), sorted(state.keys() - own.keys())
        raise ValueError(f"{path}: not the weights of {what} (missing {missing[:3]}, "
                         f"unexpected {extra[:3]}, or shapes differ)")
    module.load_state_dict(state)


def load_inception(weights: str | Path) -> FeatureNet:
    if not weights:
        raise ValueError("the Inception features need their weights: set "
                         "eval.inception_weights / --inception-weights to a local safetensors "
                         "file of pt_inception-2015-12-05 (nothing is downloaded)")
    path = Path(weights)
    state = _read_safetensors(path, "Inception weights")
    model = FIDInception()
    _load_into(model.net, state, path, "the FID Inception-v3")
    return FeatureNet(model.eval(), FIDInception.dim, f"inception:{file_sha256(path)}", None)


def _classifier_spec(d: Path) -> tuple[SmallClassifier, list[int]]:
    """The classifier a train-features directory's spec describes (not loaded)."""
    if not (d / SPEC).is_file():
        raise ValueError(f"--features {d}: no {SPEC} (make one with `infogan train-features "
                         f"--data SHARDS --out {d}`, or use --features inception)")
    try:
        spec = json.loads((d / SPEC).read_text())
        model = SmallClassifier(int(spec["in_channels"]), int(spec["classes"]),
                                int(spec["width"]))
        shape = [int(x) for x in spec["image_shape"]]
    except (ValueError, KeyError, TypeError):
        raise ValueError(f"{d / SPEC}: not a feature-network spec of infogan train-features") \
            from None
    return model, shape


def load_classifier(directory: str | Path) -> FeatureNet:
    d = Path(directory)
    model, shape = _classifier_spec(d)
    _load_into(model, _read_safetensors(d / WEIGHTS, "weights"), d / WEIGHTS,
               "the classifier its spec describes")
    return FeatureNet(model.eval(), CLASSIFIER_DIM, f"classifier:{file_sha256(d / WEIGHTS)}",
                      shape)


def _check_header(path: Path, module: nn.Module, what: str, of: str) -> None:
    """ValueError unless the safetensors file at `path` holds exactly `module`'s tensor
    names and shapes. Reads the header only (safetensors checks it against the size)."""
    from safetensors import SafetensorError, safe_open

    if not path.is_file():
        raise ValueError(f"{what} {path} does not exist")
    try:
        with safe_open(str(path), "pt") as f:
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError) as e:
        raise ValueError(f"{path}: not a safetensors weights file ({' '.join(str(e).split())})"
                         ) from None
    own = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    if own != shapes:
        missing, extra = sorted(own.keys() - shapes.keys()), sorted(shapes.keys() - own.keys())
        raise ValueError(f"{path}: not the weights of {of} (missing {missing[:3]}, "
                         f"unexpected {extra[:3]}, or shapes differ)")


def check_features(spec: str, inception_weights: str = "") -> None:
    """ValueError (one line) unless load_features(spec, inception_weights) would load:
    the spec parses and the weights' header fits the network, built on the meta device
    (no memory, no weights read). Cheap enough for preflight on every rank, so a bad
    file is found before training, not at the first FID step."""
    with torch.device("meta"):
        if spec == "inception":
            if not inception_weights:
                load_inception(inception_weights)  # its one-line error
            _check_header(Path(inception_weights), FIDInception().net, "Inception weights",
                          "the FID Inception-v3")
            return
        model, _ = _classifier_spec(Path(spec))
    _check_header(Path(spec) / WEIGHTS, model, "weights", "the classifier its spec describes")


def load_features(spec: str, inception_weights: str = "") -> FeatureNet:
    """`spec` = "inception" or a train-features directory."""
    if spec == "inception":
        return load_inception(inception_weights)
    return load_classifier(spec)


# --- infogan train-features --------------------------------------------------------------
def train_classifier(images: torch.Tensor, labels: torch.Tensor, classes: int, epochs: int,
                     batch: int, seed: int, width: int = 32,
                     lr: float = 1e-3) -> tuple[SmallClassifier, float]:
    """Trains on 90% of the labelled images (a seeded split) and returns the model and its
    accuracy on the other 10%."""
    from .data import to_float

    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    order = torch.randperm(len(images), generator=gen)
    n_val = max(1, len(images) // 10)
    val, train = order[:n_val], order[n_val:]
    model = SmallClassifier(images.shape[1], classes, width)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(epochs):
        perm = train[torch.randperm(len(train), generator=gen)]
        for i in range(0, len(perm), batch):
            idx = perm[i:i + batch]
            loss = F.cross_entropy(model(to_float(images[idx])), labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        pred = torch.cat([model(to_float(images[val[i:i + 512]])).argmax(1)
                          for i in range(0, len(val), 512)])
    return model, float((pred == labels[val]).float().mean())


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train-features",
        help="train the small classifier whose features FID/KID use (--features DIR)",
        description=__doc__.split("\n\n")[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n" + __doc__.split("\n\n")[1],
    )
    p.add_argument("--data", required=True, help="labelled shards (dir or brace pattern)")
    p.add_argument("--out", required=True, help="output directory (weights + spec)")
    p.add_argument("--epochs", type=int, default=3, help="passes over the data (default 3)")
    p.add_argument("--batch", type=int, default=128, help="batch size (default 128)")
    p.add_argument("--width", type=int, default=32, help="channels of the first conv (32)")
    p.add_argument("--seed", type=int, default=0, help="init, split and order (default 0)")
    p.add_argument("--limit", type=int, default=None, help="use only the first N images")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from safetensors.torch import save_file

    from .data.labelled import load_labelled

    for key in ("epochs", "batch", "width"):
        if getattr(args, key) < 1:
            raise ValueError(f"--{key} must be >= 1, got {getattr(args, key)}")
    images, labels, classes = load_labelled(args.data, args.limit)
    if len(images) < 20:
        raise ValueError(f"{args.data}: {len(images)} images are too few to train on")
    model, acc = train_classifier(images, labels, classes, args.epochs, args.batch,
                                  args.seed, args.width)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out / WEIGHTS))
    spec = {"kind": "classifier", "arch": "small_conv", "in_channels": images.shape[1],
            "image_shape": list(images.shape[1:]), "classes": classes, "width": args.width,
            "feature_dim": CLASSIFIER_DIM, "data": str(args.data), "images": len(images),
            "epochs": args.epochs, "seed": args.seed, "val_accuracy": acc,
            "note": "FID on these features is not comparable with Inception FID"}
    (out / SPEC).write_text(json.dumps(spec, indent=1) + "\n")
    print(f"wrote {out}/{WEIGHTS} and {SPEC}: {len(images)} images, {classes} classes, "
          f"{args.epochs} epochs, held-out accuracy {acc:.4f}")
    return 0
