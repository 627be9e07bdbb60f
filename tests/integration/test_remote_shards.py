"""Issue 13: shards from S3 (a real SeaweedFS server) and HTTP (a real nginx), through a
fault-injecting proxy; node cache; permanent faults. See tests/remote_servers.py."""

from __future__ import annotations

import hashlib
import io
import json
import multiprocessing
import os
import subprocess
import sys
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from infogan_dist.config import DataConfig
from infogan_dist.data import ShardError, StreamSource, decode_all, read_index
from infogan_dist.data import stores as remote
from infogan_dist.data.stores import cache
from tests.helpers import ROOT, VENV_BIN, launch_env, make_shards, train, train_cmd
from tests.remote_servers import (
    BUCKET,
    SECRET_KEY,
    FaultProxy,
    Nginx,
    SeaweedS3,
    port_open,
    wait_for,
)

pytestmark = pytest.mark.integration
SMOKE = "configs/smoke.yaml"


# --- servers and data -------------------------------------------------------------------

@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    return make_shards(tmp_path_factory.mktemp("digits") / "shards", limit=512, shard_size=128)


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    server = SeaweedS3(tmp_path_factory.mktemp("seaweed"))
    server.start()
    yield server
    server.kill()


@pytest.fixture(scope="module")
def s3_url(s3, shards) -> str:
    return s3.upload_dir(shards, "digits")


@pytest.fixture(scope="module")
def http(shards, tmp_path_factory):
    server = Nginx(shards.parent, tmp_path_factory.mktemp("nginx"))
    yield server
    server.stop()


@pytest.fixture
def aws_env(s3, monkeypatch):
    """In-process readers: the standard AWS variables, fresh clients, default options."""
    for k, v in s3.env().items():
        monkeypatch.setenv(k, v)
    remote.configure(DataConfig())
    yield
    remote.configure(DataConfig())


def _stream_epoch(index, batches: int | None = None, **kw) -> list[torch.Tensor]:
    src = StreamSource(index, rank=0, world_size=1, global_batch=8, seed=3,
                       shuffle_buffer=16, **kw)
    n = src.batches_per_epoch if batches is None else batches
    it = iter(src)
    return [next(it)[0] for _ in range(n)]


def _digests(images: list[torch.Tensor]) -> list[str]:
    return sorted(hashlib.sha1(im.numpy().tobytes()).hexdigest()
                  for batch in images for im in batch)


# --- reading: bytes equal to local, also through faults ----------------------------------

def test_index_and_samples_equal_local(shards, s3_url, http, aws_env):
    local = read_index(str(shards))
    assert local.sha256 is not None and local.sizes is not None  # prepare-data wrote them
    want = decode_all(local)
    for url in (s3_url, f"{http.url}/shards"):
        index = read_index(url)
        assert index.names == local.names and index.counts == local.counts
        assert index.sha256 == local.sha256
        got = decode_all(index)
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
        assert [torch.equal(a, b) for a, b in zip(_stream_epoch(index), _stream_epoch(local),
                                                   strict=True)] == [True] * 64
    # a brace pattern and the index file itself, as for local directories
    sub = read_index(f"{http.url}/shards/shard-{{000001..000002}}.tar")
    assert sub.names == ["shard-000001.tar", "shard-000002.tar"] and sub.counts == [128, 128]
    assert read_index(f"{s3_url}/index.json").paths == read_index(s3_url).paths
    # DataLoader workers (forked) make their own clients
    index = read_index(s3_url)
    assert all(torch.equal(a, b) for a, b in zip(_stream_epoch(index, num_workers=2),
                                                  _stream_epoch(local, num_workers=2),
                                                  strict=True))


def test_members_across_chunk_edges_and_tarfile_formats(shards, http, aws_env, monkeypatch):
    """The remote parser slices members out of a window of CHUNK-sized reads: with a
    300-byte CHUNK every header and most members straddle a chunk edge, and a header plus
    member is more than one chunk; a pax-format shard (another tool's) goes to tarfile."""
    from infogan_dist.data import tar as shard_reader

    monkeypatch.setattr(remote, "CHUNK", 300)
    tarfile_reads = []  # the fallback would also read plain shards right, only slower
    fallback = shard_reader.tar_file_expander
    monkeypatch.setattr(shard_reader, "tar_file_expander",
                        lambda *a, **k: (tarfile_reads.append(1), fallback(*a, **k))[1])
    local = read_index(str(shards))
    got = _members_in_process(read_index(f"{http.url}/shards"))
    want = decode_all(local)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    assert tarfile_reads == []

    pax = shards.parent / "pax"
    pax.mkdir(exist_ok=True)
    with tarfile.open(shards / "shard-000000.tar") as src, \
            tarfile.open(pax / "shard-000000.tar", "w", format=tarfile.PAX_FORMAT) as out:
        for m in src.getmembers():
            data = src.extractfile(m).read()
            m.mtime = 1.5  # a float mtime needs a pax header
            out.addfile(m, io.BytesIO(data))
    index = json.loads((shards / "index.json").read_text())
    index["shards"] = [{"name": "shard-000000.tar", "count": local.counts[0]}]
    (pax / "index.json").write_text(json.dumps(index))
    got = _members_in_process(read_index(f"{http.url}/pax"))
    assert torch.equal(got[0], want[0][: local.counts[0]]) and tarfile_reads == [1]


def _members_in_process(index) -> tuple[torch.Tensor, torch.Tensor]:
    """decode_all without its worker processes (they would not see the test's spies)."""
    from infogan_dist.data.shards import iter_shard

    pairs = [s for i in range(len(index.paths)) for s in iter_shard(index, i)]
    return (torch.from_numpy(np.stack([p[0] for p in pairs])),
            torch.tensor([p[1] for p in pairs]))


def _behind_proxy(server: str, s3, s3_url: str, http, monkeypatch, **faults
                  ) -> tuple[FaultProxy, str]:
    """A FaultProxy in front of the S3 or HTTP server, and the shards' URL through it
    (S3: the endpoint variable points at the proxy, the clients are made afresh)."""
    if server == "s3":
        proxy = FaultProxy(s3.port, **faults)
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", proxy.url)
        remote.configure(DataConfig())
        return proxy, s3_url
    proxy = FaultProxy(http.port, **faults)
    return proxy, f"{proxy.url}/shards"


@pytest.mark.parametrize("server", ["s3", "http"])
def test_next_shard_is_asked_for_ahead(server, shards, s3, s3_url, http, aws_env,
                                       monkeypatch):
    """Stream mode sends shard k+1's GET once shard k's body has arrived (data/ahead.py):
    every shard after the first opens on an answer already requested, and still each
    shard crosses the network once (the proxy counts the GETs), with the same samples."""
    from infogan_dist.data import stream
    from infogan_dist.data.stores import ahead

    proxy, url = _behind_proxy(server, s3, s3_url, http, monkeypatch)
    taken = []
    take = ahead.take
    monkeypatch.setattr(ahead, "take", lambda *a: (taken.append(take(*a)), taken[-1])[1])
    try:
        index = read_index(url)
        before = proxy.count(".tar")
        got = [(im, lb, i) for im, lb, i in stream._read(iter([2, 0, 3, 1]), index)]
        assert [a is not None for a in taken] == [False, True, True, True]
        assert proxy.count(".tar") - before == 4
    finally:
        proxy.close()
    local = read_index(str(shards))
    want = [(im, lb, i) for im, lb, i in stream._read(iter([2, 0, 3, 1]), local)]
    assert [i for *_, i in got] == [i for *_, i in want]
    assert all(np.array_equal(a[0], b[0]) and a[1] == b[1]
               for a, b in zip(got, want, strict=True))


def test_profile_file_and_endpoint_config_key(shards, s3, s3_url, tmp_path, monkeypatch):
    """Credentials from a shared credentials file + AWS_PROFILE; the endpoint from the
    config key data.s3_endpoint_url, which wins over AWS_ENDPOINT_URL_S3."""
    from tests.remote_servers import ACCESS_KEY

    creds = tmp_path / "credentials"
    creds.write_text(f"[trainer]\naws_access_key_id = {ACCESS_KEY}\n"
                     f"aws_secret_access_key = {SECRET_KEY}\n")
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(creds))
    monkeypatch.setenv("AWS_CONFIG_FILE", "/dev/null")
    monkeypatch.setenv("AWS_PROFILE", "trainer")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:9")  # nothing listens
    remote.configure(DataConfig(s3_endpoint_url=s3.endpoint))
    try:
        assert read_index(s3_url).names == read_index(str(shards)).names
    finally:
        remote.configure(DataConfig())


@pytest.mark.parametrize("server", ["s3", "http"])
def test_resets_and_503_are_survived_bitwise(server, shards, s3, s3_url, http, aws_env,
                                             monkeypatch):
    proxy, url = _behind_proxy(server, s3, s3_url, http, monkeypatch, reset_every=5,
                               err_every=10, reset_after=30000)
    try:
        local = read_index(str(shards))
        index = read_index(url)
        for _ in range(2):  # two passes: enough requests for several of each fault
            got = decode_all(index)
            assert torch.equal(got[0], decode_all(local)[0])
            assert [torch.equal(a, b) for a, b in zip(_stream_epoch(index),
                                                       _stream_epoch(local), strict=True)
                    ] == [True] * 64
        assert proxy.resets >= 2 and proxy.errors >= 2, (proxy.resets, proxy.errors)
    finally:
        proxy.close()


def test_s3_killed_mid_epoch_and_restarted(shards, s3, s3_url, aws_env, monkeypatch):
    proxy = FaultProxy(s3.port)  # no faults: it only witnesses the outage
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", proxy.url)
    remote.configure(DataConfig(retry_s=120))
    index, local = read_index(s3_url), read_index(str(shards))
    src = StreamSource(index, rank=0, world_size=1, global_batch=8, seed=3, shuffle_buffer=16)
    it, got = iter(src), []
    got.append(next(it)[0])  # the epoch has started: its first shard is open
    s3.kill()
    assert not port_open(s3.port)
    restarted = threading.Event()

    def restart():  # the outage itself is the scenario: 10 s without the server
        restarted.wait(10)
        s3.start()
        restarted.set()

    t = threading.Thread(target=restart)
    t.start()
    try:
        got += [next(it)[0] for _ in range(src.batches_per_epoch - 1)]
    finally:
        restarted.set()
        t.join()
        proxy.close()
    assert proxy.refused >= 1  # the reader did meet the dead server, and got through
    # every sample of the epoch exactly once, in the same order as from local disk
    assert _digests(got) == _digests(_stream_epoch(local))
    assert all(torch.equal(a, b) for a, b in zip(got, _stream_epoch(local), strict=True))


def test_resume_mid_epoch_from_s3_matches_local(shards, s3_url, aws_env):
    def resumed(spec: str) -> tuple[list[torch.Tensor], dict]:
        index = read_index(spec)
        src = StreamSource(index, rank=0, world_size=1, global_batch=8, seed=5,
                           shuffle_buffer=16)
        it = iter(src)
        first = [next(it)[0] for _ in range(20)]  # mid-epoch (64 batches per epoch)
        state = src.state_dict()
        again = StreamSource(index, rank=0, world_size=1, global_batch=8, seed=5,
                             shuffle_buffer=16)
        again.load_state_dict([state])
        it2 = iter(again)
        rest = [next(it2)[0] for _ in range(again.batches_per_epoch - 20)]
        return first + rest, state

    remote_run, remote_state = resumed(s3_url)
    local_run, local_state = resumed(str(shards))
    assert remote_state == local_state and remote_state["done_shards"]
    assert len(remote_run) == len(local_run)
    assert all(torch.equal(a, b) for a, b in zip(remote_run, local_run, strict=True))
    # done shards are not read again: no sample of them appears twice
    seen = _digests(remote_run)
    assert len(seen) - len(set(seen)) <= src_repeat_bound(read_index(str(shards)))


def src_repeat_bound(index) -> int:
    src = StreamSource(index, rank=0, world_size=1, global_batch=8, seed=5, shuffle_buffer=16)
    return src.max_repeated_shards * (max(index.counts) - 1)


# --- cache -------------------------------------------------------------------------------

def test_cache_second_epoch_makes_no_requests(shards, http, tmp_path, aws_env):
    proxy = FaultProxy(http.port)
    try:
        remote.configure(DataConfig(cache_dir=str(tmp_path / "cache")))
        index = read_index(f"{proxy.url}/shards")
        before = proxy.count(".tar")
        first = _stream_epoch(index)
        assert proxy.count(".tar") - before == 4  # each shard once
        second = _stream_epoch(index)
        assert proxy.count(".tar") - before == 4  # from the cache: no request at all
        assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))
        files = sorted(p.name.split("-", 1)[1] for p in (tmp_path / "cache").iterdir()
                       if not p.name.startswith("."))
        assert files == [f"shard-00000{i}.tar" for i in range(4)]
    finally:
        proxy.close()


def _fill(url: str, size: int, sha: str, cache_dir: str, barrier) -> None:
    barrier.wait()
    cache.fetch(url, size, sha, cache_dir)


def test_two_processes_fill_the_same_shard(shards, http, tmp_path, aws_env):
    proxy = FaultProxy(http.port)
    try:
        index = read_index(f"{proxy.url}/shards")
        url, size, sha = index.paths[0], index.sizes[0], index.sha256[0]
        ctx = multiprocessing.get_context("fork")
        barrier = ctx.Barrier(2)
        proxy.pause()  # both start while the server answers nothing
        procs = [ctx.Process(target=_fill, args=(url, size, sha, str(tmp_path), barrier))
                 for _ in range(2)]
        for p in procs:
            p.start()
        # one process holds the shard's lock and waits on the paused network
        wait_for(lambda: proxy.connections >= 1, 60, "the first fill's connection")
        proxy.resume()
        for p in procs:
            p.join(60)
            assert p.exitcode == 0
        names = sorted(p.name for p in tmp_path.iterdir())
        final = [n for n in names if not n.startswith(".")]
        assert len(final) == 1 and not [n for n in names if n.endswith(".part")]
        assert hashlib.sha256((tmp_path / final[0]).read_bytes()).hexdigest() == sha
        assert proxy.count("shard-000000.tar") == 1  # crossed the network once
    finally:
        proxy.close()


def test_cache_evicts_least_recently_used(shards, http, tmp_path, aws_env):
    index = read_index(f"{http.url}/shards")
    limit = int(index.sizes[0] * 2.5)
    for i in (0, 1, 2):
        cache.fetch(index.paths[i], index.sizes[i], index.sha256[i], str(tmp_path), limit)
    cache.fetch(index.paths[1], index.sizes[1], index.sha256[1], str(tmp_path), limit)  # used
    cache.fetch(index.paths[3], index.sizes[3], index.sha256[3], str(tmp_path), limit)
    left = sorted(p.name.rsplit("-", 1)[-1] for p in tmp_path.iterdir()
                  if not p.name.startswith("."))
    assert left == ["000001.tar", "000003.tar"]


def test_corrupt_shard_is_named(shards, s3, aws_env, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    for f in shards.iterdir():
        data = f.read_bytes()
        if f.name == "shard-000002.tar":
            data = data[:3000] + bytes([data[3000] ^ 1]) + data[3001:]
        (bad / f.name).write_bytes(data)
    url = s3.upload_dir(bad, "corrupt")
    with pytest.raises(ShardError, match=r"shard s3://shards/corrupt/shard-000002.tar: sha256"):
        decode_all(read_index(url))
    remote.configure(DataConfig(cache_dir=str(tmp_path / "c")))
    with pytest.raises(ShardError, match=r"shard s3://shards/corrupt/shard-000002.tar: sha256"):
        decode_all(read_index(url))
    assert not [p for p in (tmp_path / "c").iterdir() if "000002" in p.name
                and not p.name.endswith(".lock")]


# --- permanent faults: one line, exit 2, before any process group -------------------------

def _preflight_run(shards_url: str, env_extra: dict, tmp_path: Path) -> subprocess.CompletedProcess:
    env = launch_env()
    env.update(env_extra)
    return subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "--config", str(ROOT / SMOKE),
         f"data.shards={shards_url}", f"run.output_dir={tmp_path}", "data.retry_s=5"],
        capture_output=True, text=True, timeout=120, cwd=ROOT, env=env)


def test_permanent_faults_end_with_one_line(shards, s3, s3_url, http, tmp_path):
    client = s3.client()
    truncated = (shards / "shard-000001.tar").read_bytes()[:-4096]
    for f in shards.iterdir():
        body = truncated if f.name == "shard-000001.tar" else f.read_bytes()
        if f.name != "shard-000003.tar":
            client.put_object(Bucket=BUCKET, Key=f"holes/{f.name}", Body=body)
    cases = [
        (s3_url, s3.env(secret="wrong-secret"), "s3://shards/digits/index.json: HTTP 403"),
        (f"s3://{BUCKET}/holes", s3.env(),
         f"shard s3://shards/holes/shard-000001.tar is {len(truncated)} bytes but the index "
         "says"),
        (f"s3://{BUCKET}/nothing", s3.env(), "no index.json at s3://shards/nothing/index.json"),
        (f"{http.url}/missing", {}, f"no index.json at {http.url}/missing/index.json"),
    ]
    for url, env, expect in cases:
        r = _preflight_run(url, env, tmp_path)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(lines) == 1, (url, r.returncode, r.stderr[-2000:])
        assert lines[0].startswith("error: ") and expect in lines[0], lines[0]
        assert SECRET_KEY not in r.stdout + r.stderr and "wrong-secret" not in r.stderr
    # the missing shard of holes/ (its truncated one aside): 404 named
    client.put_object(Bucket=BUCKET, Key="holes/shard-000001.tar",
                      Body=(shards / "shard-000001.tar").read_bytes())
    r = _preflight_run(f"s3://{BUCKET}/holes", s3.env(), tmp_path)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr[-2000:]
    assert "shard s3://shards/holes/shard-000003.tar is listed in the index but missing" \
        in r.stderr


def test_truncated_shard_without_sizes_in_index_fails_on_read(shards, s3, aws_env, tmp_path):
    """An old index (no size, no sha256): the shortfall shows when the shard is read."""
    import json

    old = tmp_path / "old"
    old.mkdir()
    index = json.loads((shards / "index.json").read_text())
    for s in index["shards"]:
        s.pop("size"), s.pop("sha256")
    (old / "index.json").write_text(json.dumps(index))
    for f in shards.glob("*.tar"):
        data = f.read_bytes()
        (old / f.name).write_bytes(data[:-6000] if f.name == "shard-000002.tar" else data)
    url = s3.upload_dir(old, "old")
    idx = read_index(url)
    assert idx.sha256 is None and idx.sizes is None
    with pytest.raises(ShardError, match=r"^shard s3://shards/old/shard-000002.tar"):
        decode_all(idx)


# --- the trainer: 2 gloo ranks, generator bitwise equal to local shards ------------------

def _generator(run: Path, step: int) -> dict:
    return load_file(str(run / "checkpoints" / f"step-{step:08d}" / "generator.safetensors"))


@pytest.mark.parametrize("mode", ["memory", "stream"])
def test_training_from_s3_and_http_is_bitwise_local(mode, shards, s3, s3_url, http, tmp_path):
    common = ["train.max_steps=10", "checkpoint.every=10", f"data.mode={mode}",
              f"run.output_dir={tmp_path}", "log.wandb=offline"]
    train("launch/cpu_ddp.yaml", SMOKE, f"data.shards={shards}", "run.name=local", *common)
    want = _generator(tmp_path / "local", 10)
    proxy = FaultProxy(s3.port, reset_every=5, err_every=10, reset_after=30000)
    try:
        sources = [("s3", s3_url, s3.env()), ("http", f"{http.url}/shards", {})]
        if mode == "stream":  # through the faults: the same bits as the clean run
            sources.append(("s3faults", s3_url, s3.env(endpoint=proxy.url)))
        for name, url, extra in sources:
            env = launch_env()
            env.update(extra)
            train("launch/cpu_ddp.yaml", SMOKE, f"data.shards={url}", f"run.name={name}",
                  *common, env=env)
            got = _generator(tmp_path / name, 10)
            assert got.keys() == want.keys()
            assert all(torch.equal(got[k], want[k]) for k in want), name
        if mode == "stream":
            assert proxy.resets >= 1 and proxy.errors >= 1, (proxy.resets, proxy.errors)
    finally:
        proxy.close()
    # the secret is nowhere in the run directory (config.yaml, metrics, W&B, checkpoints)
    for f in (tmp_path / "s3").rglob("*"):
        if f.is_file():
            assert SECRET_KEY.encode() not in f.read_bytes(), f
    assert os.path.exists(tmp_path / "s3" / "config.yaml")


def test_corrupt_shard_during_training_ends_every_rank(shards, s3, tmp_path):
    """A fault only a read can see (sha256 mismatch, stream mode): the rank that reads it
    stops with the data layer's one-line message; torchrun then ends the other rank: no
    hang, non-zero exit, the URL and cause named, no secret printed."""
    bad = tmp_path / "bad"
    bad.mkdir()
    for f in shards.iterdir():
        data = f.read_bytes()
        if f.name == "shard-000001.tar":
            data = data[:5000] + bytes([data[5000] ^ 1]) + data[5001:]
        (bad / f.name).write_bytes(data)
    url = s3.upload_dir(bad, "corrupt-train")
    env = launch_env()
    env.update(s3.env())
    r = subprocess.run(
        [*train_cmd("launch/cpu_ddp.yaml", SMOKE, f"data.shards={url}", "data.mode=stream",
                    f"run.output_dir={tmp_path}", "train.max_steps=40")],
        capture_output=True, text=True, timeout=300, cwd=ROOT, env=env)
    assert r.returncode != 0
    msg = "shard s3://shards/corrupt-train/shard-000001.tar: sha256"
    lines = [line for line in r.stderr.splitlines() if msg in line]
    assert lines and lines[0].rstrip().endswith("rebuild the shards with `infogan prepare-data`")
    assert SECRET_KEY not in r.stdout + r.stderr


def test_prepare_data_uploads_to_s3(shards, s3, tmp_path):
    from tests.helpers import VENV_BIN, digits_idx

    images, labels = digits_idx()
    env = launch_env()
    env.update(s3.env())
    cmd = [str(VENV_BIN / "infogan"), "prepare-data", "--images", str(images), "--labels",
           str(labels), "--limit", "512", "--shard-size", "128"]
    r = subprocess.run([*cmd, "--out", f"s3://{BUCKET}/prepared"], capture_output=True,
                       text=True, timeout=300, cwd=ROOT, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    keys = sorted(o["Key"] for o in
                  s3.client().list_objects_v2(Bucket=BUCKET, Prefix="prepared/")["Contents"])
    assert keys == ["prepared/index.json"] + [f"prepared/shard-00000{i}.tar" for i in range(4)]
    for k in range(2):  # the same bytes as prepare-data writes to a local directory
        for key in keys:
            body = s3.client().get_object(Bucket=BUCKET, Key=key)["Body"].read()
            assert body == (shards / key.split("/")[1]).read_bytes(), key
        if k == 0:  # a re-run over the old upload replaces it
            r = subprocess.run([*cmd, "--out", f"s3://{BUCKET}/prepared"], capture_output=True,
                               text=True, timeout=300, cwd=ROOT, env=env)
            assert r.returncode == 0, r.stderr[-3000:]
    r = subprocess.run([*cmd, "--out", "http://127.0.0.1:9/x"], capture_output=True,
                       text=True, timeout=300, cwd=ROOT, env=env)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "only s3://" in r.stderr


# --- secrets in URLs are never written (issue 29) ----------------------------------------

URL_SECRETS = ("alicePw-7e1d93", "endpointPw-4b20c8", "querySig-c9a7f5")


@pytest.fixture(scope="module")
def http_auth(shards, tmp_path_factory):
    """nginx that asks for HTTP Basic authentication: alice / URL_SECRETS[0]."""
    server = Nginx(shards.parent, tmp_path_factory.mktemp("nginx-auth"),
                   auth=("alice", URL_SECRETS[0]))
    yield server
    server.stop()


def test_http_credentials_in_the_url_are_sent(shards, http_auth):
    """https://user:password@host/...: urllib3 dropped the user info, so a server that asks
    for a password answered 401. It is sent as Basic authentication now, and never shown."""
    host = http_auth.url.split("://")[1]
    local = read_index(str(shards))
    index = read_index(f"http://alice:{URL_SECRETS[0]}@{host}/shards")
    assert (index.counts, index.sha256) == (local.counts, local.sha256)
    images, labels = decode_all(index)
    want = decode_all(local)
    assert torch.equal(images, want[0]) and torch.equal(labels, want[1])
    for url in (f"http://{host}/shards", f"http://alice:wrong-{URL_SECRETS[0]}@{host}/shards"):
        with pytest.raises(ShardError) as e:
            read_index(url)
        assert str(e.value) == (f"shard index http://{host}/shards/index.json: HTTP 401 "
                                "Unauthorized; check the credentials")


def test_a_missing_bucket_is_named_as_such(s3, aws_env):
    """It was reported as a missing index.json ('no index.json at s3://...')."""
    with pytest.raises(ShardError) as e:
        read_index("s3://no-such-bucket-29/digits")
    assert str(e.value).startswith(
        "shard index s3://no-such-bucket-29/digits/index.json: HTTP 404 NoSuchBucket: the "
        f"bucket does not exist at this endpoint ({s3.endpoint}); check the bucket name"), \
        str(e.value)


def test_an_outage_is_not_bad_input(shards, s3, s3_url, tmp_path):
    """The real S3 server stopped, before the start and in the middle of a stream-mode
    training (its reads in a DataLoader worker): past data.retry_s the run ends with one
    line and exit 75 (EX_TEMPFAIL), not 2, and leaves <run dir>/OUTAGE for
    slurm/infogan.sh; it named a missing-data problem before."""
    import time

    env = dict(launch_env(), **s3.env())

    def train_py(*overrides: str, wait: bool = True):
        cmd = [sys.executable, str(ROOT / "train.py"), "--config", str(ROOT / SMOKE),
               f"data.shards={s3_url}", f"run.output_dir={tmp_path}", "data.retry_s=2",
               "log.images_every=0", *overrides]
        if wait:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                                  cwd=ROOT, env=env)
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    def one_line(err: str) -> str:
        assert "Traceback" not in err, err[-3000:]
        lines = [x for x in err.splitlines() if x.startswith("error: ")]
        assert len(lines) == 1, err[-3000:]
        return lines[0]

    s3.kill()
    try:
        r = train_py("run.name=before")
        assert r.returncode == 75, r.stderr[-3000:]
        line = one_line(r.stderr)
        assert line.startswith(f"error: shard index {s3_url}/index.json: still failing after "
                               "2 s of retries (EndpointConnectionError: cannot connect to "
                               f"{s3.endpoint})"), line
        assert line.endswith("an outage, not bad input: launch again when the store is back "
                             "(exit 75; slurm/infogan.sh requeues the job by itself)"), line
        assert (tmp_path / "before" / "OUTAGE").read_text().startswith("shard index ")
    finally:
        s3.start()
    run = tmp_path / "during"
    proc = train_py("run.name=during", "data.mode=stream", "data.num_workers=1",
                    "train.max_steps=100000", "log.every=1", "checkpoint.every=8", wait=False)
    try:
        end = time.monotonic() + 300
        while not ((run / "metrics.jsonl").exists() and (run / "metrics.jsonl").read_text()):
            assert proc.poll() is None and time.monotonic() < end, proc.communicate()
            time.sleep(0.1)  # polling the run's progress, not a synchronisation
        s3.kill()
        _, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        s3.start()
    assert proc.returncode == 75, err[-3000:]
    assert "still failing after 2 s of retries" in one_line(err)
    assert (run / "OUTAGE").exists()


def _assert_no_secret(where: str, data: bytes) -> None:
    for secret in URL_SECRETS:
        assert secret.encode() not in data, f"{secret} in {where}"


def test_a_password_in_a_shard_url_is_never_written(shards, http_auth, tmp_path):
    """data.shards with user:password, data.s3_endpoint_url with user info and a query
    token: every file of the run directory (config.yaml, each checkpoint's copy, metrics,
    the offline W&B run: debug.log, config, the .wandb file with the command line), the
    output and the error lines hold them masked; the training reads the real URL; a
    resume takes the URL from the command line again; a run's config.yaml (masked) as
    --config, and `infogan eval` on the checkpoint without --data, are refused in one line."""
    host = http_auth.url.split("://")[1]  # a server that asks for the password
    url = f"http://alice:{URL_SECRETS[0]}@{host}/shards"
    endpoint = f"http://key:{URL_SECRETS[1]}@127.0.0.1:9/?X-Amz-Signature={URL_SECRETS[2]}"
    env = dict(launch_env(), WANDB_MODE="offline")

    def launch(*overrides: str, config: str = str(ROOT / SMOKE)):
        cmd = [sys.executable, str(ROOT / "train.py"), "--config", config,
               f"run.output_dir={tmp_path}", "run.name=secret", "log.wandb=offline",
               "checkpoint.every=2", "log.every=1", *overrides]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT, env=env)
        _assert_no_secret("the output", (r.stdout + r.stderr).encode())
        return r

    secrets = (f"data.shards={url}", f"data.s3_endpoint_url={endpoint}")
    r = launch(*secrets, "train.max_steps=2")
    assert r.returncode == 0, r.stderr[-3000:]
    r = launch(*secrets, "train.max_steps=4")  # the resume: the URL from the command line
    assert r.returncode == 0 and "resumed from " in r.stdout, r.stderr[-3000:]
    run = tmp_path / "secret"
    files = [f for f in run.rglob("*") if f.is_file()]
    assert len(list(run.glob("wandb/offline-run-*/run-*.wandb"))) == 2  # one per segment
    assert len(list(run.glob("wandb/offline-run-*/logs/debug.log"))) == 2
    for f in files:
        _assert_no_secret(str(f), f.read_bytes())
    written = (run / "checkpoints" / "step-00000004" / "config.yaml").read_text()
    assert f"shards: http://***@{host}/shards" in written
    assert "s3_endpoint_url: http://***@127.0.0.1:9/?X-Amz-Signature=***" in written
    # a written config is not an input with credentials: refused, not sent to a server
    r = launch(config=str(run / "config.yaml"))
    errors = [line for line in r.stderr.splitlines() if line.startswith("error: ")]
    assert r.returncode == 2 and len(errors) == 1, r.stderr[-3000:]
    assert "config key data.shards: its URL has credentials masked as ***" in errors[0]
    # an error line naming a bad value with a password in it: masked
    r = launch(f"data.num_workers={url}")
    assert r.returncode == 2 and f"http://***@{host}/shards" in r.stderr, r.stderr[-3000:]
    r = subprocess.run([str(VENV_BIN / "infogan"), "eval", "--checkpoint",
                        str(run / "checkpoints" / "step-00000004"), "--no-pictures"],
                       capture_output=True, text=True, timeout=300, cwd=ROOT, env=env)
    assert r.returncode == 2 and "credentials were masked when it was written; pass --data" \
        in r.stderr, r.stderr[-3000:]
