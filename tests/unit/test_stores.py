"""A byte store is one file and one registry line (docs/data-sources.md): a toy `mem://`
store that serves objects from a dict is registered here, and real shards are read
through it end to end, by the same shard layer as local files: the index, memory mode's
decoding, stream mode, and its one-line errors."""

from __future__ import annotations

import hashlib
import io

import pytest
import torch

from infogan_dist.config import DataConfig
from infogan_dist.data import ShardError, decode_all, open_source, read_index
from infogan_dist.data.stores import STORES, NotFound, Store, check_bytes
from tests.helpers import make_shards


class MemStore(Store):
    """Objects from a dict, by URL: the whole store."""

    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}

    def open(self, url, size=None, sha256=None, then=None):
        if url not in self.blobs:
            raise NotFound(url, "no such object")
        return io.BytesIO(check_bytes(url, self.blobs[url], size, sha256))

    def size(self, url):
        return len(self.blobs[url]) if url in self.blobs else None


MEM = MemStore()
STORES.add("mem", MEM)  # the registry line


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    local = make_shards(tmp_path_factory.mktemp("d") / "shards", limit=64, shard_size=16)
    for f in local.iterdir():
        MEM.blobs[f"mem://bucket/digits/{f.name}"] = f.read_bytes()
    return local


def _batches(index, mode: str, n: int) -> list[torch.Tensor]:
    source = open_source(DataConfig(mode=mode, shuffle_buffer=8), index, rank=0,
                         world_size=1, global_batch=8, seed=3)
    it = iter(source)
    return [torch.cat([images.flatten(), labels]) for images, labels in
            (next(it) for _ in range(n))]


def test_shards_read_through_a_registered_store_equal_local(shards):
    local, mem = read_index(str(shards)), read_index("mem://bucket/digits")
    assert mem.paths[0] == "mem://bucket/digits/shard-000000.tar"
    assert (mem.names, mem.counts, mem.sizes, mem.sha256) == \
        (local.names, local.counts, local.sizes, local.sha256)
    got, want = decode_all(mem), decode_all(local)  # memory mode's decoding (forked)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    for mode in ("memory", "stream"):  # 8 batches: all 64 samples, every shard
        assert all(torch.equal(a, b) for a, b in zip(
            _batches(mem, mode, 8), _batches(local, mode, 8), strict=True)), mode


def test_a_stores_errors_name_the_shard(shards):
    with pytest.raises(ShardError, match=r"^no index.json at mem://bucket/nothing/index.json"):
        read_index("mem://bucket/nothing")
    good = MEM.blobs["mem://bucket/digits/shard-000001.tar"]
    bad = bytearray(good)
    bad[3000] ^= 1
    MEM.blobs["mem://bucket/digits/shard-000001.tar"] = bytes(bad)
    try:
        with pytest.raises(ShardError) as e:
            decode_all(read_index("mem://bucket/digits"))
    finally:
        MEM.blobs["mem://bucket/digits/shard-000001.tar"] = good
    digest = hashlib.sha256(bytes(bad)).hexdigest()
    assert str(e.value) == (
        f"shard mem://bucket/digits/shard-000001.tar: sha256 {digest[:12]}... differs from "
        f"the index's {hashlib.sha256(good).hexdigest()[:12]}... (corrupt or replaced); "
        "rebuild the shards with `infogan prepare-data`")
