"""console.keep_writing: a dead reader of stdout/stderr costs the output, not the run."""

from __future__ import annotations

import contextlib
import errno
import io
import os
import subprocess
import sys

import pytest

from infogan_dist.console import SurvivingStream
from tests.helpers import ROOT


def pipe_stream() -> tuple[int, io.TextIOWrapper]:
    read, write = os.pipe()
    return read, io.TextIOWrapper(io.BufferedWriter(io.FileIO(write, "w")), line_buffering=True)


def test_a_write_to_a_pipe_without_reader_goes_to_devnull():
    read, raw = pipe_stream()
    stream = SurvivingStream(raw)
    stream.write("read\n")
    assert os.read(read, 100) == b"read\n"
    os.close(read)  # the reader goes away
    assert stream.write("lost\n") == 5 and stream.broken
    stream.write("and on\n")
    stream.flush()
    assert os.path.samestat(os.fstat(stream.fileno()), os.stat(os.devnull))
    raw.close()


def test_other_errors_still_raise():
    # EBADF (writing to a read-only descriptor): a bug, not a reader that went away.
    # (Not by closing a descriptor under the stream: its later close would hit whatever
    # reused the number, e.g. a process pool's wake-up pipe in the next test.)
    raw = open(os.open(os.devnull, os.O_RDONLY), "w", buffering=1)
    stream = SurvivingStream(raw)
    with pytest.raises(OSError) as e:
        stream.write("x\n")
    assert e.value.errno == errno.EBADF and not stream.broken
    with contextlib.suppress(OSError):  # the failed line is still buffered
        raw.close()
    assert raw.closed


CHILD = """
import sys
sys.path.insert(0, {root!r})
if {keep}:
    from infogan_dist import console
    console.keep_writing()
sys.stdin.read()  # the parent closed our stdout's reader, then our stdin
for i in range(1000):
    print("line", i)
    print("progress", i, file=sys.stderr)
open({done!r}, "w").write("done")
"""


@pytest.mark.parametrize("keep", [True, False], ids=["kept", "unprotected"])
def test_a_process_outlives_the_reader_of_its_output(tmp_path, keep):
    done = tmp_path / "done"
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD.format(root=str(ROOT), keep=keep, done=str(done))],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    child.stdout.close()
    child.stderr.close()
    child.stdin.close()
    rc = child.wait(timeout=60)
    if keep:
        assert rc == 0 and done.read_text() == "done"
    else:  # what the trainer did before: the first print raised BrokenPipeError
        assert rc != 0 and not done.exists()
