"""Data with known factors: procedural dSprites (data/sprites.py), DeepMind's archive
layout (data/dsprites.py, a tiny archive written here), .factors members and index.json
"factors", and binary images held at 1 bit per pixel (data/packed.py)."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from infogan_dist import cli
from infogan_dist.data import MemorySource, ShardError, decode_all, read_index
from infogan_dist.data.labelled import load_labelled_factors
from infogan_dist.data.packed import PackedImages, pack
from infogan_dist.data.prepare import write_shards
from infogan_dist.data.sprites import NAMES, generate
from infogan_dist.disentangle import FactorData

SMALL = [3, 2, 4, 4, 4]  # 384 images


@pytest.fixture(scope="module")
def small():
    return generate(SMALL, 32)


def picture(images, sizes, *classes):
    return images[np.ravel_multi_index(classes, sizes), 0]


# --- the rasteriser --------------------------------------------------------------------------
def test_generator_is_deterministic_binary_and_in_grid_order(small):
    images, factors, values = small
    again = generate(SMALL, 32)
    assert np.array_equal(images, again[0]) and np.array_equal(factors, again[1])
    assert images.shape == (384, 1, 32, 32) and images.dtype == np.uint8
    assert set(np.unique(images).tolist()) == {0, 255}
    assert factors.tolist() == np.indices(SMALL).reshape(5, -1).T.tolist()  # pos_y fastest
    assert values[1] == [0.5, 1.0] and values[2][0] == 0 and values[2][-1] == pytest.approx(
        2 * np.pi) and values[3] == pytest.approx([0, 1 / 3, 2 / 3, 1])
    # every image shows something, and no two combinations draw the same picture except
    # orientation 0 and 2 pi (the first and the last class, as in dSprites)
    assert (images.reshape(384, -1).max(1) == 255).all()
    for shape in range(3):
        assert np.array_equal(picture(images, SMALL, shape, 1, 0, 1, 2),
                              picture(images, SMALL, shape, 1, 3, 1, 2))
        assert not np.array_equal(picture(images, SMALL, shape, 1, 0, 1, 2),
                                  picture(images, SMALL, shape, 1, 1, 1, 2))


def test_each_factor_moves_the_picture_its_way():
    images, _, _ = generate([3, 6, 3, 4, 4], 64)
    sizes = [3, 6, 3, 4, 4]

    def centroid(im):
        ys, xs = np.nonzero(im)
        return xs.mean(), ys.mean()

    for shape in range(3):
        area = [(picture(images, sizes, shape, s, 0, 1, 1) > 0).sum() for s in range(6)]
        assert area == sorted(area) and area[-1] > 3 * area[0]  # scale 0.5 -> 1: 4x the area
        xs = [centroid(picture(images, sizes, shape, 5, 0, x, 1))[0] for x in range(4)]
        ys = [centroid(picture(images, sizes, shape, 5, 0, 1, y))[1] for y in range(4)]
        assert np.all(np.diff(xs) > 5) and np.all(np.diff(ys) > 5)  # right, and down
    # the three shapes differ at the same factors
    pics = [picture(images, sizes, a, 5, 1, 1, 1) for a in range(3)]
    assert all(not np.array_equal(pics[i], pics[j]) for i in range(3) for j in range(i))


# --- prepare-data --sprites ------------------------------------------------------------------
@pytest.fixture(scope="module")
def sprite_shards(tmp_path_factory):
    out = tmp_path_factory.mktemp("sprites") / "shards"
    assert cli.main(["prepare-data", "--out", str(out), "--sprites", "--size", "32",
                     "--factor-sizes", ",".join(map(str, SMALL)), "--shard-size", "100"]) == 0
    return out


def test_sprites_shards_carry_factors_and_the_index_says_so(sprite_shards, small):
    index = read_index(str(sprite_shards))
    assert index.factors["names"] == NAMES and index.factors["sizes"] == SMALL
    assert index.binary and index.has_labels and index.num_classes == 3
    assert "procedural dSprites" in index.source
    fs = load_labelled_factors(str(sprite_shards))
    assert isinstance(fs.images, PackedImages) and fs.images.nbytes == 384 * 32 * 32 // 8
    images, grid, _ = small
    # written in a shuffled order; each sample's image is the grid's image of its factors
    flat = np.ravel_multi_index(fs.factors.T.astype(np.int64), SMALL)
    assert sorted(flat.tolist()) == list(range(384)) and flat.tolist() != list(range(384))
    assert np.array_equal(fs.images[0:384].numpy(), images[flat])
    assert fs.labels.tolist() == fs.factors[:, 0].tolist()  # the label is the shape
    data = FactorData.from_factors(fs.factors, SMALL, NAMES)
    assert np.array_equal(data.rows_of(grid), np.argsort(flat))


def test_memory_mode_holds_binary_images_packed_and_yields_the_same_batches(sprite_shards):
    index = read_index(str(sprite_shards))
    kw = dict(rank=1, world_size=2, global_batch=32, seed=3)
    packed = MemorySource(index, **kw)
    assert isinstance(packed.images, PackedImages)
    index.binary = False  # the same shards held as uint8
    plain = MemorySource(index, **kw)
    assert isinstance(plain.images, torch.Tensor)
    for (a, la), (b, lb), _ in zip(packed, plain, range(15), strict=False):  # > 1 epoch
        assert a.dtype == torch.uint8 and torch.equal(a, b) and torch.equal(la, lb)


def test_pack_round_trip_and_refusal():
    rng = np.random.default_rng(0)
    images = (rng.random((7, 1, 5, 3)) < 0.5).astype(np.uint8) * 255  # 15 bits: padding
    held = PackedImages(torch.from_numpy(pack(images)), (1, 5, 3))
    assert held.shape == (7, 1, 5, 3) and held.nbytes == 7 * 2
    assert np.array_equal(held[0:7].numpy(), images)
    idx = torch.tensor([6, 0, 3, 3])
    assert np.array_equal(held.index_select(0, idx).numpy(), images[[6, 0, 3, 3]])
    with pytest.raises(ShardError, match="pixels other than 0 and 255"):
        pack(images // 2)


def test_bad_factors_members_are_one_line_errors(tmp_path, small):
    images, factors, values = small
    spec = {"names": NAMES, "sizes": SMALL}
    bad = factors[:10].copy()
    bad[4, 2] = 4  # orientation has 4 classes: 0..3
    write_shards(images[:10], None, tmp_path / "a", 10, "test", None, bad, spec)
    with pytest.raises(ShardError, match=r"shard .*shard-000000.tar: member 00000004.factors: "
                                         r"not a JSON list of 5 factor classes"):
        load_labelled_factors(str(tmp_path / "a"))
    # an index that promises factors the samples do not have
    write_shards(images[:10], None, tmp_path / "b", 10, "test", None)
    meta = json.loads((tmp_path / "b" / "index.json").read_text())
    (tmp_path / "b" / "index.json").write_text(json.dumps({**meta, "factors": spec}))
    with pytest.raises(ShardError, match="member 00000000: no .factors member"):
        load_labelled_factors(str(tmp_path / "b"))
    # shards without factors: the scores say what to make
    write_shards(images[:10], None, tmp_path / "c", 10, "test", None)
    with pytest.raises(ShardError, match=r"have no factor classes .*--sprites"):
        load_labelled_factors(str(tmp_path / "c"))
    assert decode_all(read_index(str(tmp_path / "a")))[0].shape == (10, 1, 32, 32)


# --- prepare-data --dsprites -----------------------------------------------------------------
class Trap:
    """Unpickling it would create a file: the archive's pickled member must stay unread."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def dsprites_archive(path: Path, marker: Path, **replace) -> Path:
    """A tiny archive in DeepMind's layout: color 1, shape 3, scale 2, orientation 2,
    pos_x 2, pos_y 2 (48 images of 64x64 with 0/1 pixels) and a pickled metadata."""
    sizes = [3, 2, 2, 2, 2]
    images, factors, values = generate(sizes, 64)
    classes = np.concatenate([np.zeros((48, 1), np.int64), factors.astype(np.int64)], axis=1)
    vals = np.stack([np.ones(48)] + [np.asarray(values[k])[factors[:, k]] + (k == 0)
                                     for k in range(5)], axis=1)
    members = {"imgs": images[:, 0] // 255, "latents_classes": classes, "latents_values": vals,
               "metadata": np.array([Trap(marker)], dtype=object)}
    members.update(replace)
    np.savez_compressed(path, **{k: v for k, v in members.items() if v is not None})
    return path


def test_dsprites_archive_round_trip_drops_color_and_never_unpickles(tmp_path, capsys):
    marker = tmp_path / "unpickled"
    archive = dsprites_archive(tmp_path / "d.npz", marker)
    out = tmp_path / "shards"
    assert cli.main(["prepare-data", "--out", str(out), "--dsprites", str(archive)]) == 0
    printed = capsys.readouterr().out
    assert "factors shape 3 x scale 2 x orientation 2 x pos_x 2 x pos_y 2" in printed
    assert not marker.exists()
    index = read_index(str(out))
    assert index.factors["names"] == NAMES and index.factors["sizes"] == [3, 2, 2, 2, 2]
    assert index.factors["values"][0] == [1.0, 2.0, 3.0]  # DeepMind numbers shapes from 1
    assert index.factors["values"][1] == [0.5, 1.0] and "color factor dropped" in index.source
    fs = load_labelled_factors(str(out))
    images = generate([3, 2, 2, 2, 2], 64)[0]
    flat = np.ravel_multi_index(fs.factors.T.astype(np.int64), [3, 2, 2, 2, 2])
    assert np.array_equal(fs.images[0:48].numpy(), images[flat])  # 0/1 became 0/255


@pytest.mark.parametrize("replace, needle", [
    ({"imgs": None}, "no member 'imgs'"),
    ({"imgs": np.array([object()] * 3, dtype=object)}, "member 'imgs' holds Python objects"),
    ({"latents_classes": np.zeros((48, 5), np.int64)}, "member 'latents_classes' is int64 [48, 5]"),
    ({"imgs": np.full((48, 64, 64), 255, np.uint8)}, "member 'imgs' has pixel values up to 255"),
    ({"latents_values": np.zeros((47, 6))}, "member 'latents_values' is float64 [47, 6]"),
])
def test_bad_dsprites_archive_is_one_line_exit_2_and_keeps_the_old_shards(
        tmp_path, capsys, replace, needle):
    good = dsprites_archive(tmp_path / "good.npz", tmp_path / "m")
    out = tmp_path / "shards"
    assert cli.main(["prepare-data", "--out", str(out), "--dsprites", str(good)]) == 0
    before = (out / "index.json").read_text()
    capsys.readouterr()
    bad = dsprites_archive(tmp_path / "bad.npz", tmp_path / "m", **replace)
    assert cli.main(["prepare-data", "--out", str(out), "--dsprites", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(bad) in err and needle in err, err
    assert (out / "index.json").read_text() == before  # nothing lost


@pytest.mark.parametrize("content, needle", [
    (b"not an archive at all", "not a readable .npz archive"),
    (b"PK\x03\x04" + b"\x00" * 40, "not a readable .npz archive"),
    (pickle.dumps({"imgs": 1}), "not a readable .npz archive"),
], ids=["text", "broken-zip", "pickle"])
def test_a_file_that_is_no_archive_is_one_line_exit_2(tmp_path, capsys, content, needle):
    path = tmp_path / "x.npz"
    path.write_bytes(content)
    assert cli.main(["prepare-data", "--out", str(tmp_path / "o"), "--dsprites", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(path) in err and needle in err, err
    assert "pickle" not in err  # numpy's advice to unpickle is never passed on
    assert not (tmp_path / "o").exists()


def test_sprites_arguments_are_checked(tmp_path, capsys):
    for args, needle in ((["--sprites", "--factor-sizes", "3,6"], "--factor-sizes needs 5"),
                         (["--sprites", "--factor-sizes", "a,b"], "give 5 integers"),
                         (["--sprites", "--factor-sizes", "4,1,1,1,1"], "shape factor takes"),
                         (["--images", "x", "--labels", "y", "--factor-sizes", "3,1,1,1,1"],
                          "--factor-sizes goes with --sprites")):
        assert cli.main(["prepare-data", "--out", str(tmp_path / "o"), *args]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and needle in err, err


def test_offset_and_limit_split_the_shuffled_grid(tmp_path, capsys):
    parts = []
    for name, extra in (("a", ["--limit", "100"]), ("b", ["--offset", "100", "--limit", "200"])):
        assert cli.main(["prepare-data", "--out", str(tmp_path / name), "--sprites", "--size",
                         "16", "--factor-sizes", ",".join(map(str, SMALL)), *extra]) == 0
        parts.append(load_labelled_factors(str(tmp_path / name)).factors)
    assert "wrote 200 images" in capsys.readouterr().out
    flat = [set(np.ravel_multi_index(p.T.astype(np.int64), SMALL).tolist()) for p in parts]
    assert len(flat[0]) == 100 and len(flat[1]) == 200 and not flat[0] & flat[1]
