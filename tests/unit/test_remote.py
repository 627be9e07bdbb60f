"""Issue 13 without servers: URLs, redaction, the sizes and sha256 of index.json (also for
local shards), old indexes, and the node cache's eviction order."""

from __future__ import annotations

import json
import os
import re
import time

import pytest

from infogan_dist.config import ConfigError, DataConfig
from infogan_dist.data import ShardError, decode_all, read_index
from infogan_dist.data import stores as remote
from infogan_dist.data.stores import cache
from tests.helpers import make_shards


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return make_shards(tmp_path_factory.mktemp("d") / "shards", limit=64, shard_size=16)


def test_urls_and_redaction():
    assert remote.is_remote("s3://b/p") and remote.is_remote("https://h/p")
    assert not remote.is_remote("data/x") and not remote.is_remote("/abs/s3://x")
    assert remote.redact("https://user:pw@host:8443/a/b.tar?X-Amz-Signature=s3cr3t#f") \
        == "https://host:8443/a/b.tar"
    assert remote.redact("s3://bucket/prefix/shard-000000.tar") \
        == "s3://bucket/prefix/shard-000000.tar"
    assert remote.join("s3://b/p/", "index.json") == "s3://b/p/index.json"


def test_config_keys_reach_the_remote_options():
    remote.configure(DataConfig(cache_dir="/tmp/c", cache_max_gb=1.5, retry_s=7,
                                s3_endpoint_url="http://127.0.0.1:9"))
    try:
        o = remote.options()
        assert (o.cache_dir, o.cache_max_bytes, o.retry_s, o.s3_endpoint_url) == \
            ("/tmp/c", 1_500_000_000, 7.0, "http://127.0.0.1:9")
    finally:
        remote.configure(DataConfig())


def test_index_has_sizes_and_sha256(shards):
    data = json.loads((shards / "index.json").read_text())
    for s in data["shards"]:
        assert s["size"] == (shards / s["name"]).stat().st_size
        assert len(s["sha256"]) == 64
    index = read_index(str(shards))
    assert index.sizes == [s["size"] for s in data["shards"]]


def test_old_index_without_sha256_still_loads(shards, tmp_path):
    old = tmp_path / "old"
    old.mkdir()
    data = json.loads((shards / "index.json").read_text())
    for s in data["shards"]:
        del s["size"], s["sha256"]
        (old / s["name"]).write_bytes((shards / s["name"]).read_bytes())
    (old / "index.json").write_text(json.dumps(data))
    index = read_index(str(old))
    assert index.sizes is None and index.sha256 is None
    assert decode_all(index)[0].shape[0] == 64


def test_local_shard_size_and_sha256_are_checked(shards, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    for f in shards.iterdir():
        (bad / f.name).write_bytes(f.read_bytes())
    shard = bad / "shard-000001.tar"
    data = bytearray(shard.read_bytes())
    data[700] ^= 1  # same size, other bytes
    shard.write_bytes(bytes(data))
    with pytest.raises(ShardError, match=r"shard-000001.tar: sha256 .* differs") as e:
        decode_all(read_index(str(bad)))
    assert "\n" not in str(e.value)
    shard.write_bytes(bytes(data[:-512]))
    with pytest.raises(ShardError, match=r"shard-000001.tar is \d+ bytes but the index says"):
        read_index(str(bad))


def test_cache_eviction_is_least_recently_used(tmp_path):
    for i, name in enumerate(["a", "b", "c"]):
        (tmp_path / name).write_bytes(b"x" * 100)
        os.utime(tmp_path / name, (time.time() - 100 + i, time.time() - 100 + i))
    os.utime(tmp_path / "a")  # used just now
    (tmp_path / ".b.lock").write_bytes(b"")
    removed = cache.evict(tmp_path, max_bytes=250, incoming=100)
    assert [p.name for p in removed] == ["b", "c"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".b.lock", "a"]


def test_a_missing_cache_file_is_not_usable_even_without_a_recorded_size(tmp_path):
    """An index from before shard sizes were recorded (size None): the cache must still
    fetch a shard it does not hold (found by benchmarks/remote.py: every open failed)."""
    from infogan_dist.data.stores import cache

    assert not cache._usable(tmp_path / "absent.tar", None)
    assert not cache._usable(tmp_path / "absent.tar", 10)
    (tmp_path / "here.tar").write_bytes(b"x" * 10)
    assert cache._usable(tmp_path / "here.tar", None) and cache._usable(tmp_path / "here.tar", 10)
    assert not cache._usable(tmp_path / "here.tar", 11)


# --- the node cache checks a hit against what it claims (issue 29) ------------------------

class CountingStore(remote.Store):
    """Objects from a dict; counts the opens (each one a network fetch for a real store)."""

    def __init__(self, blobs: dict[str, bytes]):
        self.blobs, self.opens = blobs, 0

    def open(self, url, size=None, sha256=None, then=None):
        import io

        self.opens += 1
        return io.BytesIO(remote.check_bytes(url, self.blobs[url], size, sha256))

    def size(self, url):
        return len(self.blobs[url])


def _cached(shards):
    data = (shards / "shard-000001.tar").read_bytes()
    url = "s3://bucket/digits/shard-000001.tar"
    return url, data, CountingStore({url: data})


@pytest.mark.parametrize("with_sha", [True, False], ids=["index-sha256", "index-without-sha256"])
def test_a_corrupted_cache_entry_is_found_on_a_hit_and_fetched_again(shards, tmp_path, capsys,
                                                                       with_sha):
    """A cached shard with a rewritten byte (labels, pixels) was trusted on its size: the
    run trained on it without a word. A hit is now hashed against the index's sha256 (or
    the digest recorded at the fill): removed with a warning naming it, fetched again."""
    import hashlib

    url, data, store = _cached(shards)
    sha = hashlib.sha256(data).hexdigest() if with_sha else None
    path = cache.fetch(url, len(data), sha, str(tmp_path), store=store)
    assert path.read_bytes() == data and store.opens == 1
    bad = bytearray(data)
    bad[len(bad) // 2] ^= 1  # same size: the old check passed it
    path.write_bytes(bytes(bad))
    again = cache.fetch(url, len(data), sha, str(tmp_path), store=store)
    assert again.read_bytes() == data and store.opens == 2
    err = capsys.readouterr().err
    assert f"warning: node cache: {path} (shard {url}) does not match its sha256" in err
    assert "a corrupted or edited cache entry; removed it, fetching the shard again" in err


def test_a_cache_hit_is_hashed_once_per_process_and_file_version(shards, tmp_path, monkeypatch):
    """The cost: one hash of each cached shard per process (and after any rewrite)."""
    url, data, store = _cached(shards)
    import hashlib

    sha = hashlib.sha256(data).hexdigest()
    path = cache.fetch(url, len(data), sha, str(tmp_path), store=store)
    hashed = []
    real = cache.file_digest
    monkeypatch.setattr(cache, "file_digest", lambda p: hashed.append(p) or real(p))
    cache._checked.clear()  # a new process
    for _ in range(3):
        cache.fetch(url, len(data), sha, str(tmp_path), store=store)
    assert hashed == [path] and store.opens == 1
    os.utime(path, (0, 0))  # a new file version (its change time moved): checked again
    cache.fetch(url, len(data), sha, str(tmp_path), store=store)
    assert hashed == [path, path] and store.opens == 1


def test_an_entry_without_a_recorded_digest_is_fetched_again(shards, tmp_path):
    """Filled by a version that kept no digest, for an index without sha256: nothing to
    check it against, so it is not trusted."""
    url, data, store = _cached(shards)
    cache.fetch(url, len(data), None, str(tmp_path), store=store)
    next(tmp_path.glob(".*.sha256")).unlink()
    cache._checked.clear()
    cache.fetch(url, len(data), None, str(tmp_path), store=store)
    assert store.opens == 2 and len(list(tmp_path.glob(".*.sha256"))) == 1


def test_an_unwritable_cache_names_the_cache_not_the_shards(shards, tmp_path):
    """A read-only cache directory: one line naming data.cache_dir and what to do, found
    at start by preflight; was an OSError (or 'rebuild the shards')."""
    import subprocess

    from infogan_dist.config import load_config
    from infogan_dist.preflight import check_cache_dir

    url, data, store = _cached(shards)
    ro = tmp_path / "ro"
    ro.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(ro)], check=True)
    try:
        with pytest.raises(remote.StoreError) as e:
            cache.fetch(url, len(data), None, str(ro / "cache"), store=store)
        cfg = load_config(None, ["data.shards=s3://bucket/digits", f"data.cache_dir={ro}/c"])
        with pytest.raises(ConfigError) as start:
            check_cache_dir(cfg)
    finally:
        subprocess.run(["umount", str(ro)], check=True)
    assert str(e.value).startswith(f"{url}: the node cache {ro / 'cache'} (data.cache_dir) "
                                   "cannot be used (Read-only file system")
    assert "rebuild" not in str(e.value) and "data.cache_dir= to read without" in str(e.value)
    assert str(start.value) == (
        f"data.cache_dir={ro}/c: the node cache cannot be written: {ro} is on a read-only "
        "file system; set data.cache_dir to a writable node-local directory, or "
        "data.cache_dir= to read without a cache")


@pytest.mark.parametrize("change, said", [
    (lambda d: d.update(image_shape=[1, 100000, 100000]),
     "image_shape [1, 100000, 100000] is not [C, H, W] with C 1 (grey) or 3 (RGB)"),
    (lambda d: d.update(image_shape=[4, 28, 28]), "is not [C, H, W]"),
    (lambda d: d["shards"][0].update(count=10**12),
     "the index says 1000000000000 samples, but its"),
])
def test_an_index_claiming_what_no_shard_holds_is_refused_before_any_allocation(
        shards, tmp_path, change, said):
    """Issue 29: memory mode allocated (total, C, H, W) from the index's word (a
    DefaultCPUAllocator traceback after the process group started, or with overcommit
    a machine's memory); the models sized their layers by it."""
    import shutil

    copy = tmp_path / "shards"
    shutil.copytree(shards, copy)
    index = json.loads((copy / "index.json").read_text())
    change(index)
    (copy / "index.json").write_text(json.dumps(index))
    with pytest.raises(ShardError, match=re.escape(said)):
        read_index(str(copy))
