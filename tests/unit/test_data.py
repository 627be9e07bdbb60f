"""Reading shards: index, safe decoding, memory mode and stream mode (CPU, a few seconds).

Synthetic shards encode each sample's id in its pixels, so tests can tell exactly which
samples a source yielded.
"""

from __future__ import annotations

import io
import json
import pickle
import re
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from infogan_dist.config import DataConfig
from infogan_dist.data import (
    MemorySource,
    ShardError,
    StreamSource,
    decode_all,
    open_source,
    read_index,
    to_float,
)

UNEVEN = [50, 30, 70, 20, 40]


def _png(sample_id: int) -> bytes:
    pixels = np.zeros((2, 2), np.uint8)
    pixels[0, 0], pixels[0, 1] = divmod(sample_id, 256)
    buf = io.BytesIO()
    Image.fromarray(pixels, "L").save(buf, format="PNG")
    return buf.getvalue()


def _add(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tf.addfile(info, io.BytesIO(data))


def make_shards(root: Path, counts: list[int], extra: dict[int, dict[str, bytes]] | None = None):
    """Shards of 1x2x2 images whose pixels hold the sample id; label = id % 10.
    `extra[shard]` adds members to that shard's first sample."""
    root.mkdir(parents=True, exist_ok=True)
    start, shards = 0, []
    for s, count in enumerate(counts):
        name = f"shard-{s:06d}.tar"
        with tarfile.open(root / name, "w") as tf:
            for i in range(start, start + count):
                _add(tf, f"{i:08d}.png", _png(i))
                _add(tf, f"{i:08d}.cls", str(i % 10).encode())
                for ext, data in ((extra or {}).get(s, {}) if i == start else {}).items():
                    _add(tf, f"{i:08d}.{ext}", data)
        shards.append({"name": name, "count": count})
        start += count
    index = {"format": 1, "shards": shards, "image_shape": [1, 2, 2], "has_labels": True,
             "num_classes": 10, "source": "test"}
    (root / "index.json").write_text(json.dumps(index))
    return root


def ids_of(images: torch.Tensor) -> list[int]:
    return (images[:, 0, 0, 0].long() * 256 + images[:, 0, 0, 1].long()).tolist()


# --- index and safe decoding --------------------------------------------------------------

def test_read_index_dir_and_brace_pattern(tmp_path):
    root = make_shards(tmp_path / "d", UNEVEN)
    index = read_index(str(root))
    assert index.counts == UNEVEN and index.total == 210 and index.image_shape == (1, 2, 2)
    assert index.has_labels and index.num_classes == 10
    sub = read_index(f"{root}/shard-{{000001..000003}}.tar")
    assert sub.counts == [30, 70, 20] and sub.names[0] == "shard-000001.tar"
    images, labels = decode_all(sub)
    assert ids_of(images) == list(range(50, 170))
    assert labels.tolist() == [i % 10 for i in range(50, 170)]


def test_missing_index_tells_to_run_prepare_data(tmp_path):
    for spec in (tmp_path / "nothing", tmp_path):
        with pytest.raises(ShardError, match="infogan prepare-data --out") as e:
            read_index(str(spec))
        assert "\n" not in str(e.value)


def test_brace_pattern_refuses_unknown_or_missing_shard(tmp_path):
    root = make_shards(tmp_path / "d", UNEVEN)
    with pytest.raises(ShardError, match="shard-000005.tar .*is not listed"):
        read_index(f"{root}/shard-{{000003..000009}}.tar")
    (root / "shard-000002.tar").unlink()
    with pytest.raises(ShardError, match="shard-000002.tar is listed in the index but missing"):
        read_index(str(root))


def test_pickle_member_is_refused_not_unpickled(tmp_path):
    marker = tmp_path / "pwned"

    class Exploit:  # unpickling this would create `marker`
        def __reduce__(self):
            return (Path.touch, (marker,))

    root = make_shards(tmp_path / "d", [5, 5], extra={1: {"pyd": pickle.dumps(Exploit())}})
    with pytest.raises(ShardError) as e:
        decode_all(read_index(str(root)))
    message = str(e.value)
    assert "shard-000001.tar" in message and "00000005.pyd" in message and "\n" not in message
    assert not marker.exists()


@pytest.mark.parametrize("ext", ["pth", "npy", "pickle"])
def test_other_member_types_are_refused(tmp_path, ext):
    root = make_shards(tmp_path / "d", [3], extra={0: {ext: b"\x80\x04data"}})
    with pytest.raises(ShardError, match=rf"shard-000000.tar: member 00000000.{ext}"):
        decode_all(read_index(str(root)))


@pytest.mark.parametrize("damage", ["header", "truncated", "garbage"])
def test_corrupt_tar_names_the_shard(tmp_path, damage):
    root = make_shards(tmp_path / "d", [20, 20])
    shard = root / "shard-000001.tar"
    data = shard.read_bytes()
    data = {"header": data[:1024] + b"\xff" * 100 + data[1124:], "truncated": data[:3000],
            "garbage": bytes(range(256)) * 20}[damage]
    shard.write_bytes(data)
    with pytest.raises(ShardError, match="shard .*shard-000001.tar") as e:
        decode_all(read_index(str(root)))
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT], ids=["pax", "gnu"])
def test_pax_and_gnu_tars_from_other_tools_are_read(tmp_path, fmt):
    """Not what ShardWriter writes (long names, pax headers): read by the tarfile path."""
    root = tmp_path / "d"
    root.mkdir()
    with tarfile.open(root / "shard-000000.tar", "w", format=fmt) as tf:
        for i in range(6):
            key = f"{'k' * 120}{i}" if i % 2 else f"{i:08d}"
            for ext, data in (("png", _png(i)), ("cls", str(i % 10).encode())):
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size, info.mtime = len(data), 1.5  # a float mtime needs a pax header
                tf.addfile(info, io.BytesIO(data))
    index = {"format": 1, "shards": [{"name": "shard-000000.tar", "count": 6}],
             "image_shape": [1, 2, 2], "has_labels": True, "num_classes": 10}
    (root / "index.json").write_text(json.dumps(index))
    images, labels = decode_all(read_index(str(root)))
    assert ids_of(images) == list(range(6)) and labels.tolist() == list(range(6))


def test_corrupt_png_and_wrong_shape_name_shard_and_member(tmp_path):
    root = make_shards(tmp_path / "d", [4], extra={0: {}})
    with tarfile.open(root / "shard-000000.tar", "a") as tf:
        _add(tf, "zzz.png", b"\x89PNG\r\n\x1a\n garbage")
    index = json.loads((root / "index.json").read_text())
    index["shards"][0]["count"] = 5
    (root / "index.json").write_text(json.dumps(index))
    with pytest.raises(ShardError, match="shard-000000.tar: member zzz.png: cannot decode"):
        decode_all(read_index(str(root)))
    index["image_shape"] = [1, 3, 3]
    (root / "index.json").write_text(json.dumps(index))
    with pytest.raises(ShardError, match=r"member 00000000.png: image shape \[1, 2, 2\] differs"):
        decode_all(read_index(str(root)))


def test_count_mismatch_is_refused(tmp_path):
    root = make_shards(tmp_path / "d", [10, 10])
    index = json.loads((root / "index.json").read_text())
    index["shards"][1]["count"] = 11
    (root / "index.json").write_text(json.dumps(index))
    with pytest.raises(ShardError, match="shard-000001.tar holds 10 samples but the index says 11"):
        decode_all(read_index(str(root)))


# --- memory mode --------------------------------------------------------------------------

def _global_batches(root, world_size, steps, global_batch=20, seed=3):
    """Per step, the concatenation of all ranks' batches (ids and labels)."""
    index = read_index(str(root))
    sources = [MemorySource(index, rank=r, world_size=world_size, global_batch=global_batch,
                            seed=seed, device="cpu") for r in range(world_size)]
    iters = [iter(s) for s in sources]
    out = []
    for _ in range(steps):
        parts = [next(it) for it in iters]
        assert all(p[0].shape == (global_batch // world_size, 1, 2, 2) for p in parts)
        out.append((sum((ids_of(p[0]) for p in parts), []), torch.cat([p[1] for p in parts])))
    return out, sources


def test_memory_world_size_invariance(tmp_path):
    root = make_shards(tmp_path / "d", UNEVEN)
    one, _ = _global_batches(root, 1, 25)
    for world_size in (2, 4):
        many, _ = _global_batches(root, world_size, 25)
        assert [ids for ids, _ in many] == [ids for ids, _ in one]
        assert all(torch.equal(a[1], b[1]) for a, b in zip(one, many, strict=True))
    assert all(torch.equal(lab, torch.tensor(ids) % 10) for ids, lab in one)


def test_memory_every_sample_once_per_epoch(tmp_path):
    root = make_shards(tmp_path / "d", UNEVEN)  # N = 210, B = 20: batches straddle epochs
    batches, (source,) = _global_batches(root, 1, 21)
    stream = sum((ids for ids, _ in batches), [])
    for epoch in range(2):
        assert sorted(stream[epoch * 210 : (epoch + 1) * 210]) == list(range(210))
    assert stream[:210] != list(range(210)) and stream[:210] != stream[210:420]
    assert source.state_dict() == {"mode": "memory", "position": 420, "epoch": 2}


def test_memory_resume_is_exact_also_across_world_sizes(tmp_path):
    root = make_shards(tmp_path / "d", UNEVEN)
    full, _ = _global_batches(root, 1, 30)
    _, two = _global_batches(root, 2, 13)  # a 2-rank run stopped after 13 steps
    states = [s.state_dict() for s in two]
    assert json.loads(json.dumps(states)) == states
    index = read_index(str(root))
    for world_size in (1, 2):
        resumed = [MemorySource(index, rank=r, world_size=world_size, global_batch=20, seed=3)
                   for r in range(world_size)]
        for s in resumed:
            s.load_state_dict(states)
            assert s.epoch == 1
        iters = [iter(s) for s in resumed]
        for step in range(13, 30):
            ids = sum((ids_of(next(it)[0]) for it in iters), [])
            assert ids == full[step][0]


def test_memory_refuses_a_stream_state(tmp_path):
    source = MemorySource(read_index(str(make_shards(tmp_path / "d", [10]))), rank=0,
                          world_size=1, global_batch=4, seed=0)
    with pytest.raises(ValueError, match="data.mode"):
        source.load_state_dict([{"mode": "stream", "epoch": 0}])


# --- stream mode --------------------------------------------------------------------------

def _stream(index, world_size, *, workers, buffer=16, global_batch=16, seed=5):
    return [StreamSource(index, rank=r, world_size=world_size, global_batch=global_batch,
                         seed=seed, num_workers=workers, shuffle_buffer=buffer)
            for r in range(world_size)]


def _run_epoch(sources, batches=None):
    """Ids each rank yields until its epoch ends (or `batches` batches); iterators closed."""
    out = []
    for s in sources:
        epoch = s.epoch
        left = s.batches_per_epoch - s.state_dict()["batches_in_epoch"]
        it, ids = iter(s), []
        for _ in range(left if batches is None else batches):
            images, labels = next(it)
            assert images.dtype == torch.uint8 and labels.dtype == torch.int64
            assert torch.equal(labels, torch.tensor(ids_of(images)) % 10)
            ids += ids_of(images)
        it.close()
        assert s.epoch == (epoch + 1 if batches is None else epoch)
        out.append(ids)
    return out


@pytest.mark.parametrize("workers", [0, 2])
def test_stream_uneven_shards_equal_batches_disjoint_ranks(tmp_path, workers):
    index = read_index(str(make_shards(tmp_path / "d", UNEVEN)))
    sources = _stream(index, 2, workers=workers)
    epochs = []
    for _ in range(3):
        n = [s.batches_per_epoch for s in sources]
        ranks = _run_epoch(sources)
        assert n[0] == n[1] > 0 and [len(ids) for ids in ranks] == [n[0] * 8] * 2
        seen = ranks[0] + ranks[1]
        assert len(seen) == len(set(seen))  # disjoint across ranks, nothing twice
        epochs.append(ranks)
    assert epochs[0] != epochs[1]  # a new shard order and shuffle each epoch
    assert _run_epoch(_stream(index, 2, workers=workers)) == epochs[0]  # deterministic


def test_stream_equal_shards_give_every_sample_exactly_once(tmp_path):
    """Workers' partial last batches (36 = 4 x 8 + 4) are combined, so nothing is lost."""
    index = read_index(str(make_shards(tmp_path / "d", [36] * 4)))
    sources = _stream(index, 2, workers=2)
    assert sources[0].batches_per_epoch == 9
    ranks = _run_epoch(sources)
    assert sorted(ranks[0] + ranks[1]) == list(range(144))


@pytest.mark.parametrize("workers", [0, 2])
def test_stream_refuses_a_pickle_member_with_a_one_line_error(tmp_path, workers):
    root = make_shards(tmp_path / "d", [10, 10, 10, 10], extra={2: {"pyd": b"\x80\x04N."}})
    (source,) = _stream(read_index(str(root)), 1, workers=workers, global_batch=8)
    with pytest.raises(ShardError, match=r"shard-000002.tar: member 00000020.pyd") as e:
        _run_epoch([source])
    assert "\n" not in str(e.value)


def test_stream_too_few_shards_is_a_clear_error(tmp_path):
    index = read_index(str(make_shards(tmp_path / "d", [30, 30, 30])))
    with pytest.raises(ShardError, match=r"needs at least 4 shards .* has 3; re-run .*"
                                         r"--shard-size"):
        StreamSource(index, rank=0, world_size=2, global_batch=8, seed=0, num_workers=2)


def test_stream_state_rolls_over_at_epoch_end(tmp_path):
    index = read_index(str(make_shards(tmp_path / "d", UNEVEN)))
    (source,) = _stream(index, 1, workers=0, global_batch=8)
    _run_epoch([source])
    assert source.state_dict() == {"mode": "stream", "epoch": 1, "batches_in_epoch": 0,
                                   "done_shards": []}


MANY = [50, 30, 70, 20, 40, 60, 35, 45, 25, 55, 65, 30]


@pytest.mark.parametrize(("workers", "resume_world"), [(2, 2), (2, 1), (0, 1)])
def test_stream_resume_obeys_the_repeat_bound(tmp_path, workers, resume_world):
    index = read_index(str(make_shards(tmp_path / "d", MANY)))
    starts = np.cumsum([0, *MANY])
    shard_of = {i: s for s in range(len(MANY)) for i in range(starts[s], starts[s + 1])}
    uninterrupted = set(sum(_run_epoch(_stream(index, 2, workers=workers)), []))

    saving = _stream(index, 2, workers=workers)
    before = _run_epoch(saving, batches=9)
    states = [s.state_dict() for s in saving]
    done = {index.names.index(n) for st in states for n in st["done_shards"]}
    assert done and all(st["batches_in_epoch"] == 9 for st in states)
    for rank, ids in enumerate(before):  # the documented bound, per saving rank
        partial = {shard_of[i] for i in ids} - done
        assert len(partial) <= saving[rank].max_repeated_shards

    resumed = _stream(index, resume_world, workers=workers)
    for s in resumed:
        s.load_state_dict(states)
    n_left = resumed[0].batches_per_epoch - 9
    after = _run_epoch(resumed)
    assert all(len(ids) == n_left * 16 // resume_world for ids in after)
    before_all, after_all = sum(before, []), sum(after, [])
    assert len(after_all) == len(set(after_all))  # nothing twice after the resume
    assert not {shard_of[i] for i in after_all} & done  # done shards never come again
    repeated = set(before_all) & set(after_all)
    assert {shard_of[i] for i in repeated} <= {shard_of[i] for i in before_all} - done
    remaining = sum(MANY[s] for s in range(len(MANY)) if s not in done)
    dropped = remaining - len(after_all)  # the resumed epoch's end-of-epoch remainder
    skipped = uninterrupted - set(before_all) - set(after_all)
    assert len(skipped) <= dropped


def test_open_source_and_to_float(tmp_path):
    index = read_index(str(make_shards(tmp_path / "d", UNEVEN)))
    memory = open_source(DataConfig(mode="memory"), index, rank=0, world_size=1,
                         global_batch=8, seed=0, device="cpu")
    stream = open_source(DataConfig(mode="stream", num_workers=0, shuffle_buffer=4), index,
                         rank=1, world_size=2, global_batch=8, seed=0, device="cpu")
    assert isinstance(memory, MemorySource) and isinstance(stream, StreamSource)
    assert stream.shuffle_buffer == 4 and stream.batch == 4
    x = to_float(torch.tensor([0, 255, 127], dtype=torch.uint8))
    assert x.dtype == torch.float32 and x[0] == -1 and x[1] == 1 and abs(x[2]) < 0.01


# --- bad images are refused from the header, with one line (issue 12) ----------------------

def big_png(width: int, height: int) -> bytes:
    """A valid grayscale PNG of width x height zero pixels: small on disk (zlib squeezes
    the zero rows), width x height bytes once decoded. 12000 x 12000 is PIL's
    "decompression bomb" size (over Image.MAX_IMAGE_PIXELS)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))

    co, row = zlib.compressobj(9), b"\0" * (width + 1)  # filter byte 0 + the pixels
    idat = b"".join(co.compress(row) for _ in range(height)) + co.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat)
            + chunk(b"IEND", b""))


def _png_of(mode: str, size: tuple[int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size).save(buf, format="PNG")
    return buf.getvalue()


def replace_member(shard: Path, name: str, data: bytes) -> None:
    """Rewrites `shard` with member `name` holding `data` (same order, same names)."""
    with tarfile.open(shard) as tf:
        members = [(m.name, tf.extractfile(m).read()) for m in tf.getmembers()]
    assert name in dict(members), f"{name} not in {shard}"
    with tarfile.open(shard, "w") as tf:
        for n, d in members:
            _add(tf, n, data if n == name else d)


BAD_IMAGES = {
    # case: (member bytes, what the one-line error must say)
    "rgb_among_gray": (lambda: _png_of("RGB", (2, 2)),
                       r"image shape \[3, 2, 2\] differs .*a 2x2 RGB image where 2x2 L is "
                       r"expected; refused before decoding"),
    "other_size": (lambda: _png_of("L", (3, 2)),
                   r"image shape \[1, 2, 3\] differs .*a 3x2 L image where 2x2 L"),
    "not_an_image": (lambda: b"hello, I am text in a .png member\n",
                     r"cannot decode image: not a readable PNG or JPEG \(34 bytes\)"),
    "bomb": (lambda: big_png(12000, 12000),
             r"refused before decoding, a decompression bomb\? \(DecompressionBombWarning: "
             r"Image size \(144000000 pixels\) exceeds limit"),
    "huge_bomb": (lambda: big_png(20000, 20000),
                  r"refused before decoding, a decompression bomb\? \(DecompressionBombError"),
}


@pytest.mark.parametrize("case", sorted(BAD_IMAGES))
@pytest.mark.parametrize("mode", ["memory", "stream"])
def test_bad_image_is_one_line_naming_shard_and_member(tmp_path, case, mode):
    data, message = BAD_IMAGES[case]
    root = make_shards(tmp_path / "d", [4, 4])
    replace_member(root / "shard-000001.tar", "00000006.png", data())
    index = read_index(str(root))
    with pytest.raises(ShardError) as e:
        if mode == "memory":
            decode_all(index)
        else:
            (source,) = _stream(index, 1, workers=0, global_batch=2)
            _run_epoch([source])
    text = str(e.value)
    assert "\n" not in text and "Traceback" not in text
    assert "shard-000001.tar: member 00000006.png: " in text, text
    assert re.search(message, text), text
    assert "rebuild the shards with `infogan prepare-data`" in text


def test_a_bomb_is_refused_without_decoding_it(tmp_path):
    """12000 x 12000 pixels would take 144 MB decoded: the peak memory of the process
    that meets it grows by far less (the header is all that is read)."""
    root = make_shards(tmp_path / "d", [4])
    replace_member(root / "shard-000000.tar", "00000002.png", big_png(12000, 12000))
    code = (
        "import resource, sys\n"
        "from infogan_dist.data import ShardError, decode_all, read_index\n"
        f"index = read_index({str(root)!r})\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "try:\n"
        "    decode_all(index)\n"
        "except ShardError as e:\n"
        "    print('refused:', e)\n"
        "print('grew_kb', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)\n"
    )
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=120, cwd=Path(__file__).parents[2])
    assert r.returncode == 0, r.stderr[-3000:]
    assert "refused: " in r.stdout and "12000" not in r.stderr, r.stdout + r.stderr
    grew_kb = int(r.stdout.split("grew_kb")[1])
    assert grew_kb < 50_000, f"peak memory grew by {grew_kb} kB: the image was decoded"


@pytest.mark.parametrize("what", ["zero_bytes", "end_marker_only"])
def test_empty_tar_is_named(tmp_path, what):
    root = make_shards(tmp_path / "d", [4, 4])
    (root / "shard-000001.tar").write_bytes(b"" if what == "zero_bytes" else b"\0" * 10240)
    with pytest.raises(ShardError, match=r"shard .*shard-000001.tar: (empty file|an empty tar)"):
        decode_all(read_index(str(root)))
