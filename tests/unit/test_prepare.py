"""`infogan prepare-data`: IDX, torchvision and folder sources round-trip through the shards."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from infogan_dist import cli
from infogan_dist.data import ShardError, decode_all, prepare, read_index
from infogan_dist.data.prepare import read_idx, write_shards
from tests.helpers import digits_idx

REPO = Path(__file__).parents[2]
# The real MNIST test digits beside the repo, else Fashion-MNIST's (same format and size).
MNIST_IMAGES, MNIST_LABELS = digits_idx()
FASHION = Path("/usr/share/datasets/fashion-mnist")


def _decoded(out: Path) -> tuple[np.ndarray, np.ndarray | None]:
    images, labels = decode_all(read_index(str(out)))
    return images.numpy(), None if labels is None else labels.numpy()


def _run(argv: list[str], capsys) -> tuple[int, str, str]:
    code = cli.main(["prepare-data", *map(str, argv)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# --- IDX ------------------------------------------------------------------------------------

def test_read_idx_gz_and_plain(tmp_path):
    images, labels = read_idx(MNIST_IMAGES), read_idx(MNIST_LABELS)
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (10000,) and set(np.unique(labels)) == set(range(10))
    plain = tmp_path / "labels-idx1-ubyte"
    plain.write_bytes(gzip.decompress(MNIST_LABELS.read_bytes()))
    assert np.array_equal(read_idx(plain), labels)


def test_read_idx_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.idx"
    bad.write_bytes(b"\x00\x00\x0d\x01" + b"\x00" * 12)
    with pytest.raises(ValueError, match=f"IDX file {bad}: bad magic"):
        read_idx(bad)
    short = tmp_path / "short.idx"
    short.write_bytes(gzip.decompress(MNIST_LABELS.read_bytes())[:100])
    with pytest.raises(ValueError, match=f"IDX file {short}: header says \\[10000\\].*truncated"):
        read_idx(short)
    with pytest.raises(FileNotFoundError, match="missing.idx"):
        read_idx(tmp_path / "missing.idx")


def test_idx_swapped_or_mismatched_files_are_refused(tmp_path, capsys):
    code, _, err = _run(["--out", tmp_path / "o", "--images", MNIST_LABELS,
                         "--labels", MNIST_IMAGES], capsys)
    assert code == 2 and err.count("\n") == 1
    assert f"IDX file {MNIST_LABELS}: magic 2049, expected 2051" in err
    few = tmp_path / "few-labels-idx1-ubyte"
    few.write_bytes((2049).to_bytes(4, "big") + (5).to_bytes(4, "big") + bytes(5))
    code, _, err = _run(["--out", tmp_path / "o", "--images", MNIST_IMAGES, "--labels", few],
                        capsys)
    assert code == 2 and "has 5 labels but" in err and str(MNIST_IMAGES) in err
    assert not (tmp_path / "o").exists()


def test_write_shards_round_trip_mnist(tmp_path):
    images, labels = read_idx(MNIST_IMAGES)[:1200, None], read_idx(MNIST_LABELS)[:1200]
    index = write_shards(images, labels, tmp_path / "o", 500, "mnist test", 10)
    assert [s["count"] for s in index["shards"]] == [500, 500, 200]
    assert json.loads((tmp_path / "o/index.json").read_text()) == index
    assert index["image_shape"] == [1, 28, 28] and index["num_classes"] == 10
    got_images, got_labels = _decoded(tmp_path / "o")
    assert np.array_equal(got_images, images) and np.array_equal(got_labels, labels)


def test_cli_subprocess_round_trip(tmp_path):
    out = tmp_path / "mnist"
    proc = subprocess.run(
        [sys.executable, "-m", "infogan_dist.cli", "prepare-data", "--out", str(out),
         "--images", str(MNIST_IMAGES), "--labels", str(MNIST_LABELS), "--limit", "300",
         "--shard-size", "128"],
        capture_output=True, text=True, cwd=REPO, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert f"wrote 300 images (1x28x28, labels: 10 classes) in 3 shards to {out}" in proc.stdout
    images, labels = _decoded(out)
    assert np.array_equal(images[:, 0], read_idx(MNIST_IMAGES)[:300])
    assert np.array_equal(labels, read_idx(MNIST_LABELS)[:300])


def test_cli_help_lists_the_sources(capsys):
    with pytest.raises(SystemExit):
        cli.main(["prepare-data", "--help"])
    text = capsys.readouterr().out
    for flag in ("--images", "--torchvision", "--folder", "--shard-size", "--size", "--download"):
        assert flag in text


def test_half_written_directory_has_no_index(tmp_path, monkeypatch):
    images = read_idx(MNIST_IMAGES)[:50, None]
    write_shards(images, None, tmp_path / "o", 10, "first", None)
    calls = []

    def failing(image):
        calls.append(1)
        if len(calls) == 25:
            raise OSError("disk full")
        return b"png"

    monkeypatch.setattr(prepare, "_encode_png", failing)
    with pytest.raises(OSError):
        write_shards(images, None, tmp_path / "o", 10, "second", None)
    with pytest.raises(ShardError, match="infogan prepare-data"):
        read_index(str(tmp_path / "o"))


# --- folders --------------------------------------------------------------------------------

def _save(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def test_folder_with_class_subfolders_round_trip(tmp_path, capsys):
    rng = np.random.default_rng(0)
    expect = []
    for label, cls in enumerate(["ant", "bee", "cat"]):  # labels by sorted subfolder name
        for j in range(3):
            img = rng.integers(0, 256, (6, 5), dtype=np.uint8)
            _save(tmp_path / "src" / cls / f"{j}.png", img)
            expect.append((img, label))
    code, out, _ = _run(["--out", tmp_path / "o", "--folder", tmp_path / "src",
                         "--shard-size", "4"], capsys)
    assert code == 0 and "wrote 9 images (1x6x5, labels: 3 classes) in 3 shards" in out
    images, labels = _decoded(tmp_path / "o")
    # written in a fixed shuffled order (so stream-mode batches mix classes): match by pixels
    got = sorted((im[0].tobytes(), int(lab)) for im, lab in zip(images, labels, strict=True))
    assert got == sorted((im.tobytes(), lab) for im, lab in expect)
    assert labels.tolist() != sorted(labels.tolist())


def test_folder_mixed_sizes_need_size_and_unlabelled_is_rgb(tmp_path, capsys):
    gray = np.arange(8 * 16, dtype=np.uint8).reshape(8, 16)
    color = np.zeros((8, 8, 3), np.uint8)
    color[..., 0] = 200
    _save(tmp_path / "src/a.png", gray)
    _save(tmp_path / "src/b.png", color)
    code, _, err = _run(["--out", tmp_path / "o", "--folder", tmp_path / "src"], capsys)
    assert code == 2 and "pass --size N" in err and "a.png: 16x8" in err
    code, out, _ = _run(["--out", tmp_path / "o", "--folder", tmp_path / "src", "--size", "8"],
                        capsys)
    assert code == 0 and "(3x8x8, no labels)" in out
    images, labels = _decoded(tmp_path / "o")
    assert labels is None and read_index(str(tmp_path / "o")).num_classes is None
    # gray -> RGB, shorter side already 8: the center crop keeps columns 4..11
    expect = {np.repeat(gray[None, :, 4:12], 3, axis=0).tobytes(), color.transpose(2, 0, 1)
              .tobytes()}
    assert {im.tobytes() for im in images} == expect


# --- torchvision ----------------------------------------------------------------------------

def test_torchvision_missing_dataset_says_download(tmp_path, capsys):
    code, _, err = _run(["--out", tmp_path / "o", "--torchvision", "MNIST",
                         "--root", tmp_path / "tv"], capsys)
    assert code == 2 and "pass --download" in err and err.count("\n") == 1


def test_torchvision_fashion_mnist_test_split(tmp_path, capsys):
    raw = tmp_path / "tv/FashionMNIST/raw"
    raw.mkdir(parents=True)
    for gz in FASHION.glob("*-ubyte.gz"):
        (raw / gz.name[:-3]).write_bytes(gzip.decompress(gz.read_bytes()))
    code, out, _ = _run(["--out", tmp_path / "o", "--torchvision", "FashionMNIST", "--root",
                         tmp_path / "tv", "--split", "test", "--limit", "500"], capsys)
    assert code == 0 and "wrote 500 images (1x28x28, labels: 10 classes)" in out
    images, labels = _decoded(tmp_path / "o")
    assert np.array_equal(images[:, 0], read_idx(FASHION / "t10k-images-idx3-ubyte.gz")[:500])
    assert np.array_equal(labels, read_idx(FASHION / "t10k-labels-idx1-ubyte.gz")[:500])


# --- issue 12: huge images and mixed modes in a folder ---------------------------------------

@pytest.mark.parametrize("side", [12000, 20000])
def test_folder_decompression_bomb_is_refused_from_its_header(tmp_path, capsys, side):
    from tests.unit.test_data import big_png

    _save(tmp_path / "src/a.png", np.zeros((8, 8), np.uint8))
    (tmp_path / "src/b.png").write_bytes(big_png(side, side))
    code, out, err = _run(["--out", tmp_path / "o", "--folder", tmp_path / "src",
                           "--size", "8"], capsys)
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert f"image file {tmp_path / 'src/b.png'}: " in err
    assert "refused before decoding" in err and "decompression bomb" in err
    assert not (tmp_path / "o" / "index.json").exists()


def test_folder_pixel_limit_holds_whatever_pil_allows(tmp_path, capsys, monkeypatch):
    """Image.MAX_IMAGE_PIXELS = None (some code sets it) does not let a bomb through."""
    from tests.unit.test_data import big_png

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    (tmp_path / "src").mkdir()
    (tmp_path / "src/b.png").write_bytes(big_png(12000, 12000))
    code, _, err = _run(["--out", tmp_path / "o", "--folder", tmp_path / "src",
                         "--size", "8"], capsys)
    assert code == 2 and f"12000x12000 is 144000000 pixels, over the limit of {89_478_485}" \
        in err, err


def test_folder_of_gray_and_color_says_it_writes_rgb(tmp_path, capsys):
    """The documented policy: any color image makes the shards RGB; the grayscale ones are
    converted (channel repeated), and prepare-data says so, naming one of them."""
    _save(tmp_path / "src/a.png", np.full((4, 4), 7, np.uint8))
    _save(tmp_path / "src/b.png", np.zeros((4, 4, 3), np.uint8))
    code, out, _ = _run(["--out", tmp_path / "o", "--folder", tmp_path / "src"], capsys)
    assert code == 0 and "(3x4x4, no labels)" in out
    assert f"note: 1 of 2 images are grayscale (e.g. {tmp_path / 'src/a.png'}); all are " \
           "written as RGB" in out


def test_offset_and_limit_make_disjoint_held_out_splits(tmp_path, capsys):
    """--limit 60 and --offset 60 --limit 40: the first 60 digits and the next 40, as
    the held-out protocol needs (train on one part, score on the other)."""
    images, labels = digits_idx()
    full_images = read_idx(images)[:100]
    code, _, _ = _run(["--out", tmp_path / "a", "--images", images, "--labels", labels,
                       "--limit", 60, "--shard-size", 50], capsys)
    code_b, _, _ = _run(["--out", tmp_path / "b", "--images", images, "--labels", labels,
                         "--offset", 60, "--limit", 40, "--shard-size", 50], capsys)
    assert code == code_b == 0
    a, _ = _decoded(tmp_path / "a")
    b, _ = _decoded(tmp_path / "b")
    assert len(a) == 60 and len(b) == 40
    np.testing.assert_array_equal(a.reshape(60, 28, 28), full_images[:60])
    np.testing.assert_array_equal(b.reshape(40, 28, 28), full_images[60:100])
    assert "offset 60" in read_index(str(tmp_path / "b")).source
    code, _, err = _run(["--out", tmp_path / "c", "--images", images, "--labels", labels,
                         "--offset", 10**6], capsys)
    assert code == 2 and err.count("\n") == 1 and "--offset 1000000" in err
