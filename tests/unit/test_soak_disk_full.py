"""The soak's disk_full fault fills a real tmpfs while the training writes to it: space
taken between reading the free space and allocating the ballast must not stop the soak
(a 30-minute soak ended on that ENOSPC, 2026-12-04)."""

from __future__ import annotations

import os
import subprocess

import pytest

from benchmarks.chaos import faults


@pytest.fixture
def disk(tmp_path):
    """A real 8 MiB tmpfs; mounting needs root, as test_recovery's full-disk tests do."""
    d = tmp_path / "disk"
    d.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(d)], check=True)
    yield d
    subprocess.run(["umount", str(d)], check=True)


def _free(d):
    st = os.statvfs(d)
    return st.f_bavail * st.f_frsize


def test_fill_leaving_tops_up_when_another_writer_takes_space(disk, monkeypatch):
    real = os.posix_fallocate
    other = {"done": False}

    def racing(fd, offset, length):
        if not other["done"]:  # the training writes 1 MiB after the free space was read
            other["done"] = True
            (disk / "metrics").write_bytes(b"x" * (1 << 20))
        return real(fd, offset, length)

    monkeypatch.setattr(faults.os, "posix_fallocate", racing)
    size = faults.fill_leaving(disk / "ballast", 256 << 10)
    assert other["done"]
    assert (disk / "ballast").stat().st_size == size > 0
    assert 0 <= _free(disk) <= 256 << 10
