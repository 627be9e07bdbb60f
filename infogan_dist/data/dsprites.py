"""DeepMind's dSprites archive (dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz):

    imgs             uint8 [737280, 64, 64], pixels 0 or 1
    latents_classes  int   [737280, 6]: color, shape, scale, orientation, pos_x, pos_y
    latents_values   float [737280, 6]: the value of each class

read with np.load(allow_pickle=False): its `metadata` member is a pickled dict and is
never read. The color factor has one value (white) and is dropped, leaving the five
factors of procedural dSprites (sprites.py) in the same order; pixels become 0/255.
"""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path

import numpy as np

from .sprites import NAMES

_NPZ_FIX = "download DeepMind's dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz again"

COLUMNS = ["color", *NAMES]


def _member(npz, path: Path, name: str) -> np.ndarray:
    try:
        return npz[name]
    except KeyError:
        raise ValueError(f"dSprites archive {path}: no member {name!r} (it holds "
                         f"{', '.join(sorted(npz.files)) or 'nothing'}); expected DeepMind's "
                         "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz") from None
    except ValueError as e:
        if "allow_pickle" in str(e):
            raise ValueError(f"dSprites archive {path}: member {name!r} holds Python objects; "
                             "refused (reading them would unpickle, which can run code)") from None
        raise ValueError(f"dSprites archive {path}: member {name!r} unreadable "
                         f"({' '.join(str(e).split())})") from None
    except (OSError, EOFError, zlib.error, zipfile.BadZipFile) as e:
        raise ValueError(f"dSprites archive {path}: member {name!r} unreadable "
                         f"({type(e).__name__}: {' '.join(str(e).split())})") from None


def read_dsprites(path: str | Path
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[list[float]]]:
    """(images uint8 [N, 1, 64, 64] of 0/255, shape labels [N], factor classes int16
    [N, 5], the value of each class). ValueError (one line, naming the file and the
    member) for anything else than DeepMind's layout."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"dSprites archive {path} not found")
    with open(path, "rb") as f:
        head = f.read(4)
    if not head.startswith(b"PK"):
        # numpy would take it for a pickle and suggest allow_pickle=True: never for a download
        raise ValueError(f"dSprites archive {path}: not a readable .npz archive (no zip "
                         f"header); {_NPZ_FIX}")
    try:
        npz = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        raise ValueError(f"dSprites archive {path}: not a readable .npz archive "
                         f"({' '.join(str(e).split())})") from None
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise ValueError(f"dSprites archive {path}: a single .npy array, not an .npz archive "
                         "with imgs, latents_classes and latents_values")
    with npz:
        classes = _member(npz, path, "latents_classes")
        values = _member(npz, path, "latents_values")
        imgs = _member(npz, path, "imgs")
    n = len(imgs)
    if imgs.ndim != 3 or imgs.dtype not in (np.uint8, np.bool_) or n == 0:
        raise ValueError(f"dSprites archive {path}: member 'imgs' is {imgs.dtype} "
                         f"{list(imgs.shape)}; expected uint8 [N, H, W] of 0s and 1s")
    for name, arr, kind in (("latents_classes", classes, "iu"), ("latents_values", values, "fiu")):
        if arr.shape != (n, len(COLUMNS)) or arr.dtype.kind not in kind:
            raise ValueError(f"dSprites archive {path}: member {name!r} is {arr.dtype} "
                             f"{list(arr.shape)}; expected [{n}, {len(COLUMNS)}] "
                             f"({', '.join(COLUMNS)}) for {n} images")
    imgs = imgs.astype(np.uint8, copy=False)
    if imgs.max() > 1:
        raise ValueError(f"dSprites archive {path}: member 'imgs' has pixel values up to "
                         f"{int(imgs.max())}; DeepMind's are 0 or 1")
    if classes.min() < 0:
        raise ValueError(f"dSprites archive {path}: member 'latents_classes' has negative "
                         "classes")
    sizes = (classes.max(axis=0) + 1).astype(int).tolist()
    if sizes[0] != 1:
        raise ValueError(f"dSprites archive {path}: member 'latents_classes' has {sizes[0]} "
                         "colors; DeepMind's dSprites has one (white), which is dropped")
    kept = classes[:, 1:]
    class_values = []
    for k in range(1, len(COLUMNS)):
        v = np.zeros(sizes[k])
        v[classes[:, k]] = values[:, k]
        class_values.append(v.tolist())
    imgs *= 255  # in place: the archive's images are 3.0 GB
    return imgs[:, None], kept[:, 0].astype(np.int64), kept.astype(np.int16), class_values
