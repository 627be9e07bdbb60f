"""Issue 13 without servers: URLs, redaction, the sizes and sha256 of index.json (also for
local shards), old indexes, and the node cache's eviction order."""

from __future__ import annotations

import json
import os
import time

import pytest

from infogan_dist.config import DataConfig
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
