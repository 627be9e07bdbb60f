"""One training per run directory: `<run dir>/train.lock`, held by the main process.

A second training on a live run directory refuses at start with one line naming the
holder (host, pid, start time), exit 2, before it touches anything (train.py takes the
lock after preflight and before the Trainer writes config.yaml, removes `.tmp-*` or
truncates metrics.jsonl).

The lock works on a filesystem shared by several nodes (NFS, Lustre):
- it is created atomically: the JSON {host, boot_id, pid, pid_start, started, heartbeat,
  token} is written to a private temporary file, then `os.link`ed to `train.lock`; the
  link fails if the lock exists (atomic also on NFS, where O_EXCL was not always);
- a daemon thread rewrites it every HEARTBEAT_S seconds (temporary file + os.replace,
  so a reader sees the old or the new content, never half of it);
- it is stale, and taken over with a warning, when its heartbeat is older than STALE_S
  seconds (the holder's node died, or the process was stopped), or, on the same machine
  (same host name and boot id), at once when its pid is not alive or belongs to another
  process (psutil create time). Clocks of the nodes are assumed to agree to within
  seconds (NTP); STALE_S is 12 heartbeats, so a busy filesystem does not look dead;
- takeover is race-free: a contender renames the stale lock to a name of its own, checks
  that what it moved is the very lock it judged stale (same token), deletes it and
  creates its own with the same atomic link as above. Of two contenders one link wins;
  the other sees a live lock and refuses. A contender that moved a fresh lock by mistake
  (it was replaced between its read and its rename) links it back;
- it is released on exit (atexit, and `release()` in train.py's `finally`). A SIGKILLed
  or crashed holder leaves it behind, which the rules above recognise as stale.

Deleting `train.lock` under a live run does not open the run directory to a second
training:
- the holder also keeps an flock(2) on the run directory itself for its whole life (a
  file descriptor of the directory, closed in forked children so a decode or DataLoader
  worker never holds it). Removing the lock file does not release it, so a second
  training on the same machine is refused even without the file. Where the filesystem
  has no flock for directories (some NFS mounts), the lock file alone protects;
- the holder re-reads the lock before every write of metrics rows and every checkpoint
  (`ensure_held`, also at each heartbeat): a lock that is gone is created again (with a
  warning); a lock that now holds another training's token means another training owns
  the run directory, and this one raises RunLockError (exit 2) before writing anything
  more, so the two never append to one metrics.jsonl or prune each other's checkpoints.
"""

from __future__ import annotations

import atexit
import fcntl
import json
import os
import secrets
import socket
import sys
import threading
import time
from pathlib import Path

import psutil

LOCK_NAME = "train.lock"
HEARTBEAT_S = 5.0  # the holder rewrites the lock this often
STALE_S = 60.0  # a lock whose heartbeat is older than this is stale, on any node


class RunLockError(Exception):
    """The run directory is in use. One line naming the holder and what to do."""


_current: RunLock | None = None  # the lock this process holds (the main process of a run)
_fork_fds: set[int] = set()  # directory descriptors a forked child must not keep open


def _close_in_child() -> None:
    # Only this process's reference goes: the flock stays with the parent (closing a
    # duplicate does not unlock; LOCK_UN would).
    for fd in list(_fork_fds):
        try:
            os.close(fd)
        except OSError:
            pass
    _fork_fds.clear()


os.register_at_fork(after_in_child=_close_in_child)


def ensure_held() -> None:
    """RunLockError if this process holds a run lock that another training took; a no-op
    in processes that hold none (every rank but the main one). Called before writes."""
    if _current is not None and _current.held:
        _current.ensure_held()


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def _read(path: Path) -> dict | None:
    """The lock's JSON, or None if it is absent; {} if it is unreadable."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _holder(info: dict) -> str:
    return (f"host {info.get('host', '?')}, pid {info.get('pid', '?')}, started "
            f"{info.get('started', '?')}")


def stale_reason(info: dict, now: float | None = None, stale_s: float = STALE_S) -> str | None:
    """Why the lock `info` is stale, or None if its holder may be alive."""
    now = time.time() if now is None else now
    age = now - float(info.get("heartbeat", 0) or 0)
    if age > stale_s:
        return f"its heartbeat is {age:.0f} s old (stale after {stale_s:.0f} s)"
    if info.get("host") == socket.gethostname() and info.get("boot_id") == _boot_id():
        pid = int(info.get("pid", -1))
        try:
            created = psutil.Process(pid).create_time()
        except (psutil.NoSuchProcess, ValueError):
            return f"process {pid} is not running"
        except psutil.Error:
            return None  # alive but not ours to inspect
        if abs(created - float(info.get("pid_start", 0))) > 1:
            return f"pid {pid} now belongs to another process"
    return None


class RunLock:
    def __init__(self, run_dir: Path, heartbeat_s: float = HEARTBEAT_S,
                 stale_s: float = STALE_S):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self.heartbeat_s, self.stale_s = heartbeat_s, stale_s
        self.token = secrets.token_hex(8)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.held = False
        self._created_dir = False
        self._dir_fd: int | None = None
        self.lost: str | None = None  # why another training owns the run directory now
        self._check = threading.Lock()  # ensure_held from the loop and the heartbeat
        proc = psutil.Process()
        self.info = {"host": socket.gethostname(), "boot_id": _boot_id(), "pid": proc.pid,
                     "pid_start": proc.create_time(), "started": _when(time.time()),
                     "heartbeat": time.time(), "token": self.token}

    # --- files --------------------------------------------------------------------------
    def _private(self, what: str) -> Path:
        host, pid = self.info["host"], self.info["pid"]
        return self.run_dir / f".{LOCK_NAME}.{what}-{host}-{pid}-{self.token}"

    def _write_private(self) -> Path:
        tmp = self._private("new")
        self.info["heartbeat"] = time.time()
        with open(tmp, "w") as f:
            f.write(json.dumps(self.info))
            f.flush()
            os.fsync(f.fileno())
        return tmp

    def _create(self) -> bool:
        """Atomically create the lock; False if one exists."""
        tmp = self._write_private()
        try:
            os.link(tmp, self.path)
            return True
        except FileExistsError:
            return False
        finally:
            tmp.unlink(missing_ok=True)

    # --- acquire / release -------------------------------------------------------------
    def acquire(self) -> list[str]:
        """Take the lock or raise RunLockError. Returns warnings (a stale lock taken over)."""
        global _current
        self._created_dir = not self.run_dir.exists()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        try:
            self._lock_dir()
            warnings = self._acquire_file()
        except BaseException:
            self._unlock_dir()
            raise
        _current = self
        return warnings

    def _lock_dir(self) -> None:
        """flock the run directory for the life of this process (see the module doc).
        Held by a live training: RunLockError naming it. Its lock file names the holder;
        if the file was deleted, the holder creates it again at its next heartbeat, so
        this waits up to two heartbeats for it (or for the flock to come free)."""
        self._dir_fd = os.open(self.run_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        deadline = time.monotonic() + 2 * self.heartbeat_s
        while True:
            try:
                fcntl.flock(self._dir_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                pass
            except OSError:  # no flock for directories here (some NFS): the file alone
                self._unlock_dir()
                return
            info = _read(self.path) or {}
            if info and stale_reason(info, stale_s=self.stale_s) is None:
                raise self._in_use(info)
            if time.monotonic() > deadline:
                raise RunLockError(
                    f"run directory {self.run_dir} is in use by another process of this "
                    f"machine (it holds a lock on the directory itself; its {LOCK_NAME} is "
                    "missing or stale: a stopped or hung training?); end that training, or "
                    "use another run.name")
            time.sleep(0.05)  # polling the holder's files: no event to wait on
        _fork_fds.add(self._dir_fd)

    def _unlock_dir(self) -> None:
        fd, self._dir_fd = self._dir_fd, None
        if fd is not None:
            _fork_fds.discard(fd)
            os.close(fd)  # releases the flock

    def _acquire_file(self) -> list[str]:
        warnings: list[str] = []
        for _ in range(20):  # each pass ends in success, a refusal, or a lost race
            if self._create():
                self.held = True
                atexit.register(self.release)
                self._thread = threading.Thread(target=self._beat, name="run-lock-heartbeat",
                                                daemon=True)
                self._thread.start()
                return warnings
            info = _read(self.path)
            if info is None:
                continue  # released between our link and our read: try again
            if not info:  # unreadable: judge by the file's age, like a heartbeat
                try:
                    info = {"heartbeat": self.path.stat().st_mtime}
                except FileNotFoundError:
                    continue
            why = stale_reason(info, stale_s=self.stale_s)
            if why is None:
                raise self._in_use(info)
            if self._take_over(info):
                warnings.append(f"took over the stale lock {self.path} ({_holder(info)}: {why})")
        raise RunLockError(f"could not take the lock {self.path}: other trainings keep "
                           "taking it; start one training per run directory")

    def _in_use(self, info: dict) -> RunLockError:
        return RunLockError(
            f"run directory {self.run_dir} is in use by another training ({_holder(info)}; "
            f"lock {self.path}, heartbeat every {self.heartbeat_s:.0f} s); wait for it to "
            f"end, stop it (touch {self.run_dir / 'STOP'}), or use another run.name")

    def _take_over(self, info: dict) -> bool:
        """Remove the stale lock `info` if it is still the lock; True if we removed it."""
        grave = self._private("stale")
        try:
            os.rename(self.path, grave)
        except FileNotFoundError:
            return False  # another contender moved it first
        moved = _read(grave) or {}
        if moved.get("token") == info.get("token") and (
                info.get("token") is not None or moved == {}):
            grave.unlink(missing_ok=True)
            return True
        # We moved a lock that was replaced after we read it: put it back if we can.
        try:
            os.link(grave, self.path)
        except FileExistsError:
            pass
        grave.unlink(missing_ok=True)
        return False

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            with self._check:
                if not self.held:
                    return
                self._verify()
                if self.lost is not None:  # the loop raises it before its next write
                    print(f"warning: {self.lost}", file=sys.stderr, flush=True)
                    return
                try:
                    os.replace(self._write_private(), self.path)
                except OSError as e:  # a filesystem hiccup: try again at the next beat
                    print(f"warning: could not refresh the run lock {self.path} ({e})",
                          file=sys.stderr, flush=True)

    def ensure_held(self) -> None:
        """Re-reads the lock: ours, go on; gone (deleted under the live run), create it
        again with a warning; another training's, RunLockError from now on."""
        with self._check:
            if self.lost is None and self.held:
                self._verify()
            if self.lost is not None:
                raise RunLockError(self.lost)

    def _verify(self) -> None:
        current = _read(self.path)
        if current == {}:
            return  # unreadable right now (being replaced, a hiccup): judge it next time
        if current is None:
            if self._create():
                print(f"warning: the run lock {self.path} was removed while this training "
                      f"held it (pid {self.info['pid']}); created it again. Delete "
                      f"{LOCK_NAME} only when no training runs", file=sys.stderr, flush=True)
                return
            current = _read(self.path) or {}  # another training created one first
        if current.get("token") != self.token:
            self.lost = (
                f"the run lock {self.path} was taken over by another training "
                f"({_holder(current)}) while this one held it; stopped before writing more "
                f"metrics or checkpoints into {self.run_dir}, which that training owns now. "
                "Never delete the lock of a live run; to run both, give each its own run.name")

    def release(self) -> None:
        """Remove the lock if it is still ours. Safe to call twice; a no-op in a forked
        child (a decode or DataLoader worker inherits this object and atexit)."""
        global _current
        if not self.held or os.getpid() != self.info["pid"]:
            return
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=self.heartbeat_s + 5)
        with self._check:
            self.held = False
        current = _read(self.path)
        if current and current.get("token") == self.token:
            self.path.unlink(missing_ok=True)
        self._unlock_dir()
        if _current is self:
            _current = None
        if self._created_dir:  # a run that failed before writing anything leaves no trace
            try:
                self.run_dir.rmdir()
            except OSError:
                pass  # not empty: the run wrote its files
        atexit.unregister(self.release)


def acquire(run_dir: Path) -> tuple[RunLock, list[str]]:
    lock = RunLock(run_dir)
    return lock, lock.acquire()
