"""What a rank pays to start and to end, paid again at every restart (the soak measures
it, docs/soak.md): train.py freezes the objects left at exit, so the interpreter's last
collection does not walk them; and the trainer's imports stay without torchvision and
scipy (about as costly to import as torch, needed only for the sample CLI and scores),
which b6bdbbb made so for pictures and scores: a guard that the trainer keeps it."""

from __future__ import annotations

import subprocess
import sys

from tests.helpers import ROOT


def _python(code: str) -> str:
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout.strip()


def test_the_trainer_imports_neither_torchvision_nor_scipy():
    out = _python("import sys, infogan_dist.trainer, infogan_dist.pictures, "
                  "infogan_dist.scores; print(sorted(m for m in ('torchvision', 'scipy') "
                  "if m in sys.modules))")
    assert out == "[]"


def test_train_py_freezes_what_is_left_before_the_interpreter_exits():
    out = _python("import atexit, gc, runpy, sys\n"
                  "atexit.register(lambda: print('frozen', gc.get_freeze_count() > 0))\n"
                  "sys.argv = ['train.py', '--config', 'configs/smoke.yaml', '--dry-run']\n"
                  "runpy.run_path('train.py', run_name='__main__')\n")
    assert out.splitlines()[-1] == "frozen True"


def test_the_start_up_line_names_each_part_in_order(monkeypatch):
    """startup.summary(): the time from the process's creation to the last mark, split by
    mark (the soak reads the restarted rank 0's line to say where a restart went)."""
    import re

    from infogan_dist import startup

    monkeypatch.setattr(startup, "_marks", [])
    startup.mark("imports")
    startup.mark("checks")
    line = startup.summary()
    m = re.fullmatch(r"start-up (\d+\.\d) s: imports (\d+\.\d), checks (\d+\.\d)", line)
    assert m, line
    total, *parts = (float(x) for x in m.groups())
    assert abs(total - sum(parts)) <= 0.1 + 1e-9 and parts[0] > 0
