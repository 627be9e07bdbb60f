"""`infogan prepare-data`: turn IDX files, a torchvision dataset or an image folder into shards.

    infogan prepare-data --out data/fashion_mnist/train --shard-size 5000 \\
        --images train-images-idx3-ubyte.gz --labels train-labels-idx1-ubyte.gz
    infogan prepare-data --out data/cifar10/train --torchvision CIFAR10 --root ~/tv --download
    infogan prepare-data --out data/faces --folder photos/ --size 64
    infogan prepare-data --out s3://my-bucket/fmnist/train --images ... --labels ...
    infogan prepare-data --out data/mnist/heldout --offset 5000 --limit 5000 \
        --images t10k-images-idx3-ubyte.gz --labels t10k-labels-idx1-ubyte.gz
    infogan prepare-data --out data/dsprites \
        --dsprites dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz
    infogan prepare-data --out data/dsprites --sprites

Output: DIR/shard-NNNNNN.tar (per sample `{key}.png`, with labels `{key}.cls`, with
factors `{key}.factors`) and DIR/index.json, written last and atomically so a
half-written directory has no index. --dsprites and --sprites write the five factor
classes of dSprites (docs/disentanglement.md) and the shape as the label.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import tempfile
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import webdataset as wds
from PIL import Image

from . import factors as factor_codec
from . import stores
from .shards import INDEX_FORMAT, INDEX_NAME

IDX_IMAGES, IDX_LABELS = 2051, 2049  # magic numbers of ubyte IDX with 3 and 1 dimensions
TORCHVISION = ("MNIST", "FashionMNIST", "CIFAR10", "SVHN", "CelebA")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
GRAY_MODES = {"1", "L", "LA", "I", "I;16", "F"}
# A folder image larger than this is refused from its header, before decoding (PIL's own
# default Image.MAX_IMAGE_PIXELS, fixed here so that no other setting of it matters).
MAX_FOLDER_PIXELS = 89_478_485


def read_idx(path: str | Path) -> np.ndarray:
    """An unsigned-byte IDX file (.gz or plain) as an array of its declared shape."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"IDX file {path} not found")
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise ValueError(f"IDX file {path}: broken gzip data ({e})") from None
    if len(raw) < 4 or raw[:3] != b"\x00\x00\x08" or not 1 <= raw[3] <= 4:
        raise ValueError(f"IDX file {path}: bad magic number; expected an unsigned-byte IDX file")
    ndim = raw[3]
    header = 4 + 4 * ndim
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    if len(raw) != header + int(np.prod(dims)):
        raise ValueError(
            f"IDX file {path}: header says {dims} ({int(np.prod(dims))} bytes of data) but "
            f"the file holds {len(raw) - header}; the file is truncated or not IDX"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _encode_png(image_chw: np.ndarray) -> bytes:
    c = image_chw.shape[0]
    img = Image.fromarray(image_chw[0] if c == 1 else image_chw.transpose(1, 2, 0),
                          "L" if c == 1 else "RGB")
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=1)  # fast to write; MNIST-sized files anyway
    return buf.getvalue()


def write_shards(
    images_uint8_NCHW: np.ndarray,
    labels: np.ndarray | None,
    out_dir: str | Path,
    shard_size: int,
    source: str,
    num_classes: int | None,
    factors: np.ndarray | None = None,
    factor_spec: dict | None = None,
    order: np.ndarray | None = None,
) -> dict:
    """Write shards and index.json (last, atomically); returns the index dict.
    `factors` [N, F] classes with `factor_spec` (data/factors.py): a .factors member per
    sample and index.json's "factors". index.json's "binary" says whether every pixel
    is 0 or 255 (then memory mode holds the images at 1 bit per pixel). `order`: the
    rows to write, in this order (default all, in order): a shuffle of a big set
    without a copy of it."""
    images = np.asarray(images_uint8_NCHW)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"images must be uint8 [N, 1 or 3, H, W], got {images.dtype} "
                         f"{list(images.shape)}")
    if labels is not None and len(labels) != len(images):
        raise ValueError(f"{len(labels)} labels for {len(images)} images")
    if (factors is None) != (factor_spec is None) or \
            factors is not None and len(factors) != len(images):
        raise ValueError("factors need a factor_spec and one row per image")
    rows = np.arange(len(images)) if order is None else np.asarray(order, dtype=np.int64)
    n = len(rows)
    if n == 0:
        raise ValueError("no images to write")
    if shard_size < 1:
        raise ValueError(f"--shard-size must be >= 1, got {shard_size}")
    if stores.is_remote(str(out_dir)):  # s3://bucket/prefix: write here, upload, index last
        url = str(out_dir).rstrip("/")
        if not stores.writable(url):
            raise ValueError(f"--out {stores.redact(url)}: only "
                             f"{', '.join(stores.writable_schemes())} (or a local directory) "
                             "can be written; copy a local shard directory to an HTTP server "
                             "with its own tools")
        stores.delete(stores.join(url, INDEX_NAME))  # unfinished from here until the end
        with tempfile.TemporaryDirectory(prefix="infogan-prepare-") as tmp:
            index = write_shards(images, labels, tmp, shard_size, source, num_classes,
                                 factors, factor_spec, order)
            for shard in index["shards"]:
                stores.upload(os.path.join(tmp, shard["name"]), stores.join(url, shard["name"]))
            stores.upload(os.path.join(tmp, INDEX_NAME), stores.join(url, INDEX_NAME))
        return index
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # Drop the old index first: from here until the new one is written the dir is "unfinished".
    (out / INDEX_NAME).unlink(missing_ok=True)
    for old in out.glob("shard-[0-9][0-9][0-9][0-9][0-9][0-9].tar"):
        old.unlink()
    pattern = str(out / "shard-").replace("%", "%%") + "%06d.tar"
    writer = wds.ShardWriter(pattern, maxcount=shard_size, verbose=0, encoder=False, mtime=0)
    try:
        for i, row in enumerate(rows):
            sample = {"__key__": f"{i:08d}", "png": _encode_png(images[row])}
            if labels is not None:
                sample["cls"] = str(int(labels[row])).encode("ascii")
            if factors is not None:
                sample[factor_codec.EXT] = factor_codec.encode(factors[row])
            writer.write(sample)
    finally:
        writer.close()
    counts = [min(shard_size, n - s) for s in range(0, n, shard_size)]
    index = {
        "format": INDEX_FORMAT,
        "shards": [_shard_entry(out, f"shard-{i:06d}.tar", c) for i, c in enumerate(counts)],
        "image_shape": [int(x) for x in images.shape[1:]],
        "has_labels": labels is not None,
        "num_classes": None if labels is None else int(num_classes or int(labels.max()) + 1),
        "source": source,
        "binary": _is_binary(images),  # of all rows: binary then, binary any subset
    }
    if factor_spec is not None:
        index["factors"] = factor_spec
    tmp = out / f".{INDEX_NAME}.tmp"
    tmp.write_text(json.dumps(index, indent=2) + "\n")
    os.replace(tmp, out / INDEX_NAME)
    return index


def _is_binary(images: np.ndarray) -> bool:
    """Every pixel 0 or 255 (checked a block at a time: no copy of a big set)."""
    for start in range(0, len(images), 4096):
        block = images[start : start + 4096]
        if not np.all((block == 0) | (block == 255)):
            return False
    return True


def _shard_entry(out: Path, name: str, count: int) -> dict:
    """Name, sample count, bytes and sha256: readers check the last two (remote shards,
    cache fills, memory mode); indexes without them still load."""
    digest = hashlib.sha256()
    with open(out / name, "rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    return {"name": name, "count": count, "size": (out / name).stat().st_size,
            "sha256": digest.hexdigest()}


# --- sources ------------------------------------------------------------------------------

def _from_idx(images_path: str, labels_path: str) -> tuple[np.ndarray, np.ndarray]:
    images, labels = read_idx(images_path), read_idx(labels_path)
    for path, arr, magic, what in ((images_path, images, IDX_IMAGES, "image"),
                                   (labels_path, labels, IDX_LABELS, "label")):
        if 0x800 + arr.ndim != magic:
            raise ValueError(f"IDX file {path}: magic {0x800 + arr.ndim}, expected {magic} for "
                             f"{what}s; check the --images/--labels order")
    if len(images) != len(labels):
        raise ValueError(f"IDX file {labels_path} has {len(labels)} labels but {images_path} "
                         f"has {len(images)} images")
    return images[:, None], labels.astype(np.int64)


def _square(img: Image.Image, size: int) -> Image.Image:
    """Resize the shorter side to `size`, then center-crop to size x size."""
    w, h = img.size
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    img = img.resize((nw, nh), Image.Resampling.BICUBIC)
    left, top = (nw - size) // 2, (nh - size) // 2
    return img.crop((left, top, left + size, top + size))


def _to_array(images: Iterable[Image.Image], n: int, mode: str, size: int | None) -> np.ndarray:
    """PIL images (consumed one at a time, so a big folder is never all decoded at once)
    -> uint8 NCHW in `mode`, resized and center-cropped to size x size when given."""
    out = None
    for i, im in enumerate(images):
        im = im.convert(mode) if im.mode != mode else im
        arr = np.asarray(_square(im, size) if size is not None else im)
        arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
        if out is None:
            out = np.empty((n, *arr.shape), dtype=np.uint8)
        out[i] = arr
    assert out is not None
    return out


def _from_folder(root: str, size: int | None, limit: int | None):
    base = Path(root)
    if not base.is_dir():
        raise FileNotFoundError(f"image folder {base} not found")

    def images_in(d: Path) -> list[Path]:
        return sorted(p for p in d.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)

    classes = sorted(d.name for d in base.iterdir() if d.is_dir() and images_in(d))
    top = images_in(base)
    if classes and top:
        raise ValueError(f"image folder {base} has images both at the top ({top[0].name}) and in "
                         "class subfolders; put all of them in subfolders, or none")
    files = [(p, i) for i, c in enumerate(classes) for p in images_in(base / c)] if classes \
        else [(p, -1) for p in top]
    if not files:
        raise ValueError(f"image folder {base} has no image files ({', '.join(IMAGE_SUFFIXES)})")
    # Folders come sorted by class; shards in that order would give stream mode batches of
    # one class (its shuffle is per worker and local). A fixed shuffle keeps runs repeatable.
    files = [files[i] for i in np.random.default_rng(0).permutation(len(files))][:limit]

    def opened(load: bool) -> Iterator[Image.Image]:
        for p, _ in files:
            try:
                # The size comes from the header; refuse a huge one before decoding it.
                with warnings.catch_warnings():
                    warnings.simplefilter("error", Image.DecompressionBombWarning)
                    im = Image.open(p)
            except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
                raise ValueError(f"image file {p}: refused before decoding, a decompression "
                                 f"bomb? ({' '.join(str(e).split())}); remove it or shrink "
                                 "it") from None
            except (OSError, ValueError) as e:
                raise ValueError(f"image file {p}: cannot read it ({e})") from None
            with im:
                w, h = im.size
                if w * h > MAX_FOLDER_PIXELS:
                    raise ValueError(
                        f"image file {p}: {w}x{h} is {w * h} pixels, over the limit of "
                        f"{MAX_FOLDER_PIXELS} (a decompression bomb?); refused before "
                        "decoding; remove it or shrink it")
                if load:
                    try:
                        im.load()  # here, so a broken file is reported by name
                    except (OSError, ValueError) as e:
                        raise ValueError(f"image file {p}: cannot read it ({e})") from None
                yield im

    sizes, modes = {}, {}
    for (p, _), im in zip(files, opened(False), strict=True):  # headers only: PIL opens lazily
        sizes.setdefault(im.size, p)
        modes.setdefault(im.mode, []).append(p)
    if size is None and len(sizes) > 1:
        (a, pa), (b, pb) = list(sizes.items())[:2]
        raise ValueError(f"images differ in size ({pa}: {a[0]}x{a[1]}, {pb}: {b[0]}x{b[1]}); "
                         "pass --size N to resize and center-crop them to N x N")
    mode = "L" if set(modes) <= GRAY_MODES else "RGB"
    gray = [p for m, ps in modes.items() if m in GRAY_MODES for p in ps]
    if mode == "RGB" and gray:
        # Documented policy (docs/checkpoints.md, "What happens when..."): a folder with any color
        # image is written as RGB; grayscale images get their channel repeated, and we say so.
        print(f"note: {len(gray)} of {len(files)} images are grayscale (e.g. {gray[0]}); all "
              "are written as RGB, grayscale repeated in the three channels", flush=True)
    images = _to_array(opened(True), len(files), mode, size)
    labels = np.array([i for _, i in files], dtype=np.int64) if classes else None
    return images, labels, (len(classes) if classes else None)


TV_SPLITS = {"SVHN": ("train", "test", "extra"), "CelebA": ("train", "valid", "test", "all")}


def _from_torchvision(name: str, root: str, split: str, download: bool, size: int | None,
                      limit: int | None):
    import torchvision.datasets as tvd  # only this source needs torchvision

    splits = TV_SPLITS.get(name, ("train", "test"))
    if split not in splits:
        raise ValueError(f"--split for {name} must be one of {', '.join(splits)}, got {split!r}")
    try:
        if name in ("MNIST", "FashionMNIST", "CIFAR10"):
            ds = getattr(tvd, name)(root, train=split == "train", download=download)
        elif name == "SVHN":
            ds = tvd.SVHN(root, split=split, download=download)
        else:
            ds = tvd.CelebA(root, split=split, target_type=[], download=download)
    except RuntimeError as e:
        where = "" if download else "; pass --download where online to fetch it"
        raise FileNotFoundError(f"torchvision {name} not found or corrupt under {root}{where} "
                                f"({' '.join(str(e).split())})") from None
    if name == "CelebA":  # PIL images of 178x218, no classes
        n = min(len(ds), limit) if limit else len(ds)
        return _to_array((ds[i][0] for i in range(n)), n, "RGB", size or 64), None, None
    if name in ("MNIST", "FashionMNIST"):
        images, labels = ds.data.numpy()[:, None], ds.targets.numpy()
    elif name == "CIFAR10":
        images, labels = ds.data.transpose(0, 3, 1, 2), np.asarray(ds.targets)
    else:
        images, labels = ds.data, np.asarray(ds.labels)
    images, labels = images[:limit], labels[:limit]
    if size is not None:
        mode = "L" if images.shape[1] == 1 else "RGB"
        pil = (Image.fromarray(im[0] if im.shape[0] == 1 else im.transpose(1, 2, 0))
               for im in images)
        images = _to_array(pil, len(images), mode, size)
    return np.ascontiguousarray(images), labels.astype(np.int64), 10


def _with_factors(args: argparse.Namespace):
    """(images, labels, factors, factor spec, source, the order to write the rows in)
    of --dsprites or --sprites."""
    from .dsprites import read_dsprites
    from .sprites import NAMES, SIZES, generate

    if args.dsprites:
        if args.size is not None:
            raise ValueError("--size does not apply to --dsprites (its images are 64x64)")
        images, labels, factors, values = read_dsprites(args.dsprites)
        source = f"dsprites {args.dsprites} (color factor dropped)"
    else:
        try:
            sizes = [int(x) for x in args.factor_sizes.split(",")] if args.factor_sizes \
                else SIZES
        except ValueError:
            raise ValueError(f"--factor-sizes {args.factor_sizes}: give 5 integers "
                             "separated by commas, e.g. 3,6,40,32,32") from None
        images, factors, values = generate(sizes, args.size or 64)
        labels = factors[:, 0].astype(np.int64)
        source = (f"procedural dSprites (infogan_dist/data/sprites.py), factor sizes "
                  f"{','.join(map(str, sizes))}, {images.shape[-1]}x{images.shape[-1]}")
    # a fixed shuffle, as for --folder: the grid order would give stream mode (whose
    # shuffle is local) batches of one shape and scale. Written through write_shards'
    # order: a shuffled copy would be another 3.0 GB.
    order = np.random.default_rng(0).permutation(len(images))
    sizes = [len(v) for v in values]
    return (images, labels, factors, {"names": NAMES, "sizes": sizes, "values": values},
            source + ", shuffled (seed 0)", order)


# --- command line ---------------------------------------------------------------------------

def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "prepare-data",
        help="write webdataset shards + index.json from IDX files, torchvision, a folder or "
             "dSprites",
        description="Write webdataset shards (PNG + class label per sample) and index.json. "
        "Give exactly one source: --images/--labels, --torchvision/--root, --folder, "
        "--dsprites or --sprites.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n" + __doc__.split("\n\n")[1],
    )
    p.add_argument("--out", required=True, help="output directory (shards + index.json), "
                   "or s3://bucket/prefix (uploaded, index.json last)")
    p.add_argument("--shard-size", type=int, default=5000, help="images per shard (default 5000)")
    p.add_argument("--limit", type=int, default=None, help="keep only the first N images "
                   "(after --offset)")
    p.add_argument("--offset", type=int, default=0,
                   help="skip the first N images (with --limit: a held-out split, e.g. "
                        "--limit 5000 for training and --offset 5000 for scoring)")
    src = p.add_argument_group("source (exactly one)")
    src.add_argument("--images", help="IDX image file (.gz or plain), as MNIST/Fashion-MNIST")
    src.add_argument("--labels", help="IDX label file matching --images")
    src.add_argument("--torchvision", choices=TORCHVISION, help="torchvision dataset name")
    src.add_argument("--root", help="torchvision dataset root directory")
    src.add_argument("--split", default="train",
                     help="torchvision split: train or test (SVHN: extra; CelebA: valid, all)")
    src.add_argument("--download", action="store_true", help="let torchvision download (online)")
    src.add_argument("--folder", help="folder of images, optionally in one subfolder per class "
                     "(labels by sorted subfolder name); written in a fixed shuffled order")
    src.add_argument("--dsprites", metavar="FILE.npz",
                     help="DeepMind's dSprites archive (imgs, latents_classes, latents_values)")
    src.add_argument("--sprites", action="store_true",
                     help="procedural dSprites drawn by this project (not the same pixels as "
                          "DeepMind's); --size sets the image side (default 64)")
    p.add_argument("--factor-sizes", default=None, metavar="S,C,O,X,Y",
                   help="--sprites: values per factor (shape, scale, orientation, pos_x, pos_y;"
                        " default 3,6,40,32,32), spread over the same ranges")
    p.add_argument("--size", type=int, default=None,
                   help="resize shorter side to N and center-crop to N x N (folder, torchvision;"
                        " CelebA default 64)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    given = [s for s, v in (("--images/--labels", args.images or args.labels),
                            ("--torchvision", args.torchvision), ("--folder", args.folder),
                            ("--dsprites", args.dsprites), ("--sprites", args.sprites)) if v]
    if len(given) != 1:
        raise ValueError("give exactly one source: --images FILE --labels FILE, "
                         "--torchvision NAME --root DIR, --folder DIR, --dsprites FILE.npz or "
                         f"--sprites (got {given or 'none'})")
    if args.factor_sizes is not None and not args.sprites:
        raise ValueError("--factor-sizes goes with --sprites")
    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit must be >= 1, got {args.limit}")
    if args.offset < 0:
        raise ValueError(f"--offset must be >= 0, got {args.offset}")
    if args.size is not None and args.size < 1:
        raise ValueError(f"--size must be >= 1, got {args.size}")
    # the sources read up to offset + limit; the slice below drops the offset
    upto = args.offset + args.limit if args.limit else None
    factors = spec = rows = None
    if args.images or args.labels:
        if not (args.images and args.labels):
            raise ValueError("--images and --labels go together")
        images, labels = _from_idx(args.images, args.labels)
        images, labels = images[:upto], labels[:upto]
        num_classes = int(labels.max()) + 1
        source = f"idx {args.images} {args.labels}"
    elif args.torchvision:
        if not args.root:
            raise ValueError("--torchvision needs --root DIR (where the dataset lies)")
        images, labels, num_classes = _from_torchvision(
            args.torchvision, args.root, args.split, args.download, args.size, upto)
        source = f"torchvision {args.torchvision} {args.split} {args.root}"
    elif args.folder:
        images, labels, num_classes = _from_folder(args.folder, args.size, upto)
        source = f"folder {args.folder} shuffled (seed 0)"
    else:
        images, labels, factors, spec, source, rows = _with_factors(args)
        rows = rows[:upto]
        num_classes = spec["sizes"][0]  # the label is the shape
    if args.offset:
        total = len(images) if rows is None else len(rows)
        if args.offset >= total:
            raise ValueError(f"--offset {args.offset}: the source has only {total} images")
        if rows is not None:
            rows = rows[args.offset:]
        else:
            images = images[args.offset:]
            labels = None if labels is None else labels[args.offset:]
        source += f" offset {args.offset}"
    if args.limit:
        source += f" limit {args.limit}"
    index = write_shards(images, labels, args.out, args.shard_size, source, num_classes,
                         factors, spec, rows)
    c, h, w = index["image_shape"]
    kind = f"labels: {index['num_classes']} classes" if labels is not None else "no labels"
    if spec is not None:
        kind += ", factors " + " x ".join(f"{n} {s}" for n, s in
                                          zip(spec["names"], spec["sizes"], strict=True))
    print(f"wrote {sum(s['count'] for s in index['shards'])} images ({c}x{h}x{w}, {kind})"
          f" in {len(index['shards'])} shards to {args.out}/ (index {args.out}/{INDEX_NAME})")
    return 0
