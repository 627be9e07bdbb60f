"""A private Slurm cluster on localhost for the integration tests.

One munged (own key and socket), one slurmctld and two slurmd "nodes" (`slurmd -N node1`,
`-N node2`, each on its own port, both at NodeAddr 127.0.0.1), all configured by a
generated slurm.conf in a temp directory and reached through SLURM_CONF. Nothing touches
/etc/slurm, /etc/munge or the system daemons. Needs root (slurmd runs jobs as the
submitting user) and the Debian/Ubuntu packages slurm-wlm and munge (launch/setup.sh).

    cluster = SlurmCluster.create()
    cluster.start()              # polls until both nodes are idle, or raises SlurmError
    job = cluster.sbatch("slurm/infogan.sh", "--nodes=2", cwd=repo)
    info = cluster.wait_for_end(job, timeout=180)
    cluster.stop()               # cancels jobs, stops daemons by pid, kills leftovers

Choices, all for a fast and self-contained cluster on a small CI machine:
- proctrack/linuxproc and task/none: no cgroups (often unavailable in containers).
- cred_expire=10 (AuthInfo): a requeued job may start again after 10 s, not 120 s.
- sched_interval=1 and bf_interval=1: a job whose BeginTime has passed starts within a
  second instead of waiting for the next 60 s scheduling pass.
- MinJobAge=86400 and jobcomp/filetxt: without accounting (slurmdbd), finished jobs stay in
  `scontrol show job` for the whole session, and every job end is recorded in a file.
- SlurmdParameters=config_overrides: a node may claim more CPUs than the machine has.
- KillWait=5: cancelled or requeued jobs are SIGKILLed 5 s after SIGTERM.
"""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("munge", "sbatch", "srun", "scontrol", "sinfo", "squeue", "scancel")
# Job states after which a job will not run again on its own.
TERMINAL_STATES = {
    "COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY",
    "BOOT_FAIL", "DEADLINE", "PREEMPTED",
}
MARKER = "INFOGAN_TEST_SLURM"  # env var in every daemon and job process of one cluster
ROOT_PREFIX = "infogan-slurm-"


class SlurmError(RuntimeError):
    """The cluster did not start or a command failed; the message carries the logs."""


def _which(name: str) -> str | None:
    # the daemons live in /usr/sbin, which a non-login PATH may lack
    path = os.environ.get("PATH", "") + ":/usr/sbin:/sbin:/usr/local/sbin"
    return shutil.which(name, path=path)


def missing_requirements() -> str | None:
    """Why this machine cannot run the cluster, or None if it can."""
    missing = [n for n in DAEMONS + CLIENTS if _which(n) is None]
    if missing:
        return (f"Slurm/munge not installed (missing {', '.join(missing)}); "
                "run launch/setup.sh as root (apt packages slurm-wlm munge)")
    if os.geteuid() != 0:
        return "the private Slurm cluster needs root (slurmd starts jobs as the submitting user)"
    return None


def free_ports(n: int) -> list[int]:
    """n distinct TCP ports that are free right now (held open together while chosen)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _tail(path: Path, lines: int = 40) -> str:
    """The last lines of a log, without the C++ stack frames torch prints on warnings."""
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError as e:
        return f"({path}: {e})"
    text = [t for t in text if not re.match(r"^(\d+: )?frame #\d+", t)]
    return "\n".join(text[-lines:])


def _die_with_parent() -> None:
    """In the daemon, before exec: SIGTERM when the test process dies (prctl
    PR_SET_PDEATHSIG), so a killed pytest does not leave daemons behind."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)
    except OSError:
        pass


def _marked_processes() -> dict[int, str]:
    """pid -> cluster root, for every process that carries the marker variable."""
    me, found = os.getpid(), {}
    prefix = f"{MARKER}=".encode()
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == me:
            continue
        try:
            environ = (d / "environ").read_bytes()
        except OSError:
            continue
        for item in environ.split(b"\0"):
            if item.startswith(prefix):
                found[int(d.name)] = item[len(prefix):].decode(errors="replace")
    return found


def _kill_marked(root: str) -> None:
    for _ in range(5):
        pids = [pid for pid, r in _marked_processes().items() if r == root]
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.2)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def reap_stale_clusters() -> None:
    """Kills what is left of clusters whose test process died without a teardown (a
    killed pytest): their daemons, slurmstepds and jobs carry the marker variable, and
    the cluster's owner.pid names a process that is gone. Live clusters are left alone."""
    for root in set(_marked_processes().values()):
        if not Path(root).name.startswith(ROOT_PREFIX):
            continue
        try:
            owner = int((Path(root) / "owner.pid").read_text())
        except (OSError, ValueError):
            owner = None
        if owner is None or not _alive(owner):
            _kill_marked(root)
            shutil.rmtree(root, ignore_errors=True)


class SlurmCluster:
    def __init__(self, root: Path, nodes: int = 2, cpus_per_node: int = 1,
                 keep_files: bool = False):
        self.root = Path(root)
        self.nodes = [f"node{i + 1}" for i in range(nodes)]
        self.cpus_per_node = cpus_per_node
        self.keep_files = keep_files
        self.conf = self.root / "slurm.conf"
        self.munge_socket = self.root / "munge" / "munge.sock"
        self.jobcomp = self.root / "jobcomp.txt"
        self.logs = self.root / "log"
        self.procs: dict[str, subprocess.Popen] = {}
        self.started = False

    @classmethod
    def create(cls, **kw) -> SlurmCluster:
        # Not pytest's tmp_path: munged demands that every directory above its socket is
        # world-executable, and pytest's base temp dir is 0700. Short paths also keep the
        # socket under the 108-byte limit of unix socket names.
        root = Path(tempfile.mkdtemp(prefix=ROOT_PREFIX, dir="/tmp"))
        root.chmod(0o755)
        (root / "owner.pid").write_text(str(os.getpid()))
        kw.setdefault("keep_files", os.environ.get("INFOGAN_KEEP_SLURM", "") not in ("", "0"))
        return cls(root, **kw)

    # --- environment and configuration ---------------------------------------------------
    @property
    def env(self) -> dict[str, str]:
        """Environment for client commands (and for sbatch: jobs inherit it)."""
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("SLURM_", "SBATCH_", "SRUN_", "SALLOC_"))}
        env["PATH"] = env.get("PATH", "/usr/bin:/bin") + ":/usr/sbin:/sbin"
        env["SLURM_CONF"] = str(self.conf)
        env[MARKER] = str(self.root)
        return env

    def _write_config(self) -> None:
        ctld_port, slurmd_port, *node_ports = free_ports(2 + len(self.nodes))
        for d in ("munge", "state", "log", *(f"spool/{n}" for n in self.nodes)):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        (self.root / "munge").chmod(0o755)  # munged: socket dir must be world-executable
        key = self.root / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        node_lines = "\n".join(
            f"NodeName={n} NodeAddr=127.0.0.1 Port={p} CPUs={self.cpus_per_node} State=UNKNOWN"
            for n, p in zip(self.nodes, node_ports, strict=True)
        )
        r = self.root
        self.conf.write_text(f"""\
# generated by tests/integration/slurm_cluster.py
ClusterName=infogantest
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={self.munge_socket},cred_expire=10
StateSaveLocation={r}/state
SlurmdSpoolDir={r}/spool/%n
SlurmctldPidFile={r}/slurmctld.pid
SlurmdPidFile={r}/slurmd-%n.pid
SlurmctldLogFile={r}/log/slurmctld.log
SlurmdLogFile={r}/log/slurmd-%n.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc={self.jobcomp}
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1,bf_interval=1
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SlurmdParameters=config_overrides
ReturnToService=2
JobRequeue=1
MinJobAge=86400
KillWait=5
InactiveLimit=0
MpiDefault=none
SwitchType=switch/none
MailProg=/bin/true
{node_lines}
PartitionName=debug Nodes={",".join(self.nodes)} Default=YES MaxTime=INFINITE State=UP
""")

    # --- daemons ---------------------------------------------------------------------------
    def _spawn(self, name: str, cmd: list[str]) -> None:
        out = open(self.logs / f"{name}.out", "ab")  # the child keeps its own copy
        env = self.env
        self.procs[name] = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env,
            cwd=self.root, start_new_session=True, preexec_fn=_die_with_parent,
        )
        out.close()

    def _check_alive(self) -> None:
        for name, p in self.procs.items():
            if p.poll() is not None:
                raise SlurmError(f"{name} exited with status {p.returncode} during start-up\n"
                                 + self.diagnostics())

    def _poll(self, what: str, ready, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            self._check_alive()
            if ready():
                return
            if time.monotonic() > deadline:
                raise SlurmError(f"timed out after {timeout:.0f} s waiting for {what}\n"
                                 + self.diagnostics())
            time.sleep(0.2)

    def start(self, timeout: float = 60) -> None:
        reap_stale_clusters()
        self._write_config()
        self.started = True
        self._spawn("munged", [
            _which("munged"), "--foreground", f"--socket={self.munge_socket}",
            f"--key-file={self.root}/munge/munge.key", f"--pid-file={self.root}/munge/munged.pid",
            f"--log-file={self.logs}/munged.log", f"--seed-file={self.root}/munge/munged.seed",
        ])
        self._poll("munged", self._munge_works, timeout)
        self._spawn("slurmctld", [_which("slurmctld"), "-D", "-f", str(self.conf)])
        self._poll("slurmctld (scontrol ping)", self._ctld_up, timeout)
        for n in self.nodes:
            self._spawn(f"slurmd-{n}", [_which("slurmd"), "-D", "-N", n, "-f", str(self.conf)])
        self._poll(f"nodes {', '.join(self.nodes)} to be idle", self._nodes_idle, timeout)

    def _munge_works(self) -> bool:
        if not self.munge_socket.exists():
            return False
        r = subprocess.run([_which("munge"), "-n", "-S", str(self.munge_socket)],
                           capture_output=True, timeout=10)
        return r.returncode == 0

    def _ctld_up(self) -> bool:
        r = self.run("scontrol", "ping", check=False)
        return r.returncode == 0 and "UP" in r.stdout

    def node_states(self) -> dict[str, str]:
        r = self.run("sinfo", "--noheader", "--Node", "--format=%N %T", check=False)
        states = {}
        for line in r.stdout.splitlines():
            if line.strip():
                name, state = line.split()
                states[name] = state
        return states

    def _nodes_idle(self) -> bool:
        states = self.node_states()
        return all(states.get(n, "").rstrip("*") == "idle" for n in self.nodes)

    def stop(self) -> None:
        """Cancels every job, stops the daemons by pid, kills what is left of the jobs."""
        if self.started and "slurmctld" in self.procs and self.procs["slurmctld"].poll() is None:
            self.run("scancel", "--full", "--partition=debug", check=False)
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                r = self.run("squeue", "--noheader", "--format=%i", check=False)
                if r.returncode != 0 or not r.stdout.strip():
                    break
                time.sleep(0.2)
        order = [n for n in self.procs if n.startswith("slurmd-")] + ["slurmctld", "munged"]
        for name in order:
            p = self.procs.get(name)
            if p is not None and p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(timeout=5)
        self._kill_leftovers()
        self.started = False
        if not self.keep_files:
            shutil.rmtree(self.root, ignore_errors=True)

    def _kill_leftovers(self) -> None:
        """slurmstepd and job processes outlive slurmd; they carry our marker variable."""
        _kill_marked(str(self.root))

    # --- clients ---------------------------------------------------------------------------
    def run(self, *cmd: str, check: bool = True, timeout: float = 30, cwd: Path | None = None,
            env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess:
        full_env = self.env | dict(env or {})
        r = subprocess.run([_which(cmd[0]) or cmd[0], *cmd[1:]], capture_output=True, text=True,
                           timeout=timeout, cwd=cwd, env=full_env)
        if check and r.returncode != 0:
            raise SlurmError(f"{' '.join(cmd)} exited {r.returncode}\n{r.stdout}\n{r.stderr}\n"
                             + self.diagnostics())
        return r

    def sbatch(self, script: str | Path, *args: str, cwd: Path,
               env: Mapping[str, str] | None = None) -> int:
        """Submits and returns the job id. `env` is exported into the job (--export=ALL)."""
        r = self.run("sbatch", "--parsable", *args, str(script), cwd=cwd, env=env)
        return int(r.stdout.strip().split(";")[0])

    def job(self, job_id: int) -> dict[str, str]:
        """`scontrol show job` as a dict (JobState, Restarts, ExitCode, Reason, ...)."""
        r = self.run("scontrol", "--oneliner", "show", "job", str(job_id))
        info = {}
        for field in r.stdout.split():
            if "=" in field:
                k, v = field.split("=", 1)
                info.setdefault(k, v)
        return info

    def wait_for(self, job_id: int, what: str, ready, timeout: float, log: Path | None = None,
                 poll: float = 0.5) -> dict[str, str]:
        """Polls `scontrol show job` until ready(info) holds; returns the info."""
        deadline = time.monotonic() + timeout
        while True:
            info = self.job(job_id)
            if ready(info):
                return info
            if time.monotonic() > deadline:
                raise SlurmError(f"job {job_id}: timed out after {timeout:.0f} s waiting for "
                                 f"{what}; now {info.get('JobState')} "
                                 f"(Reason={info.get('Reason')}, Restarts={info.get('Restarts')})"
                                 f"\n{self.diagnostics(log)}")
            time.sleep(poll)

    def wait_for_end(self, job_id: int, timeout: float, log: Path | None = None) -> dict[str, str]:
        return self.wait_for(job_id, "the job to end",
                             lambda i: i.get("JobState") in TERMINAL_STATES, timeout, log)

    def jobcomp_records(self, job_id: int) -> list[dict[str, str]]:
        """Every recorded end of the job (a requeue ends a segment too), oldest first."""
        if not self.jobcomp.exists():
            return []
        records = []
        for line in self.jobcomp.read_text(errors="replace").splitlines():
            rec = dict(f.split("=", 1) for f in line.split() if "=" in f)
            if rec.get("JobId") == str(job_id):
                records.append(rec)
        return records

    def diagnostics(self, job_log: Path | None = None) -> str:
        """Daemon logs, node states and the job log, for assertion messages."""
        parts = [f"--- private Slurm cluster in {self.root} (set INFOGAN_KEEP_SLURM=1 to keep it)"]
        for name, p in self.procs.items():
            parts.append(f"{name}: pid {p.pid}, "
                         + ("running" if p.poll() is None else f"exited {p.returncode}"))
        try:
            if "slurmctld" in self.procs and self.procs["slurmctld"].poll() is None:
                parts.append("nodes: " + repr(self.node_states()))
                parts.append(self.run("squeue", "--all", check=False, timeout=10).stdout)
        except (OSError, subprocess.SubprocessError) as e:
            parts.append(f"(sinfo/squeue failed: {e})")
        files = [job_log] if job_log else []
        files += sorted(self.logs.glob("*.log")) + sorted(self.logs.glob("*.out"))
        for f in files:
            parts.append(f"--- {f}\n{_tail(f, 80 if f == job_log else 25)}")
        return "\n".join(parts)
