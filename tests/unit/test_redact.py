"""redact.py: URL credentials masked in every string the project writes (issue 29)."""

from __future__ import annotations

import pytest

from infogan_dist import redact
from infogan_dist.config import load_config, save_config


@pytest.mark.parametrize("raw, masked", [
    ("http://user:pw@host:8080/a/shards", "http://***@host:8080/a/shards"),
    ("https://TOKEN@github.com/x", "https://***@github.com/x"),
    ("http://us:p@ss@host/x", "http://***@host/x"),  # an unencoded @ in the password
    ("https://b.s3.amazonaws.com/k.tar?X-Amz-Credential=AK%2F1&X-Amz-Signature=ab12#f",
     "https://b.s3.amazonaws.com/k.tar?X-Amz-Credential=***&X-Amz-Signature=***#f"),
    ("error: shard http://u:p@h/x/shard-000001.tar: HTTP 404; check the URL",
     "error: shard http://***@h/x/shard-000001.tar: HTTP 404; check the URL"),
    ("data.shards=http://u:p@h/shard-{000000..000003}.tar",
     "data.shards=http://***@h/shard-{000000..000003}.tar"),
    ("s3://bucket/prefix", "s3://bucket/prefix"),
    ("/local/dir and http://host/plain?flag", "/local/dir and http://host/plain?flag"),
])
def test_credentials_in_urls_are_masked(raw, masked):
    assert redact.text(raw) == masked
    assert redact.is_masked(masked) == (masked != raw)


def test_a_written_config_holds_no_credentials(tmp_path):
    cfg = load_config(None, ["data.shards=http://alice:secret1@h/s",
                             "eval.fid_data=https://h/e?sig=secret2"])
    save_config(cfg, tmp_path / "config.yaml")
    text = (tmp_path / "config.yaml").read_text()
    assert "secret" not in text and "http://***@h/s" in text and "sig=***" in text
    assert cfg.data.shards == "http://alice:secret1@h/s"  # the training keeps the real one
    written = load_config(tmp_path / "config.yaml")
    assert redact.masked_keys({"data.shards": written.data.shards,
                               "eval.fid_data": written.eval.fid_data}) == [
        "data.shards", "eval.fid_data"]
