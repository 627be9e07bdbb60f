"""The training job of the soak: two "machines" on localhost, each one `accelerate launch`
(torchrun) with one worker, meeting by c10d rendezvous hosted by machine 0, launched as
slurm/infogan.sh launches them (TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1, PET_LOCAL_ADDR,
--rdzv_conf is_host, --max_restarts), train.resume=auto.

The job also plays the cluster: when a machine's launcher exits before the training is
over, it is started again (a node restarted by its scheduler); each such start is
recorded, with the launcher's exit status, so the report can tell a planned restart
(the fault asked for it: a killed machine, a requeue after a preemption) from one that
a person would have had to make. A fault that stops the whole job (preemption, STOP)
holds the restarts until every launcher is gone, then requeues the job.

Every line a launcher prints (its workers' too) is kept with the wall-clock time it
arrived, in machine-<m>.log and in memory, so the report can say when a restart was
noticed and when the workers resumed.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from .watch import MetricsWatch

ROOT = Path(__file__).resolve().parents[2]


class SoakError(RuntimeError):
    """The soak itself cannot go on (a condition never came); one line."""


@dataclass
class Line:
    t: float  # wall clock of arrival
    machine: int
    text: str


@dataclass
class Exit:
    t: float
    machine: int
    code: int | None
    planned: bool  # a fault asked for it (killed machine, preemption, STOP)


@dataclass
class JobSpec:
    config: str  # training config, relative to the repository root
    overrides: list[str]  # section.key=value, run.output_dir and run.name included
    run_dir: Path
    env: dict[str, str]
    logs: Path  # where machine-<m>.log go
    port: int  # the c10d rendezvous port on machine 0
    max_restarts: int  # torchrun's in-job restarts per launcher
    python_bin: Path  # the venv's bin directory (accelerate, python)
    per_machine: list[list[str]] = field(default_factory=lambda: [[], []])  # more overrides
    host_names: bool = False  # each machine in a UTS namespace named soak-node<m> (root)


class Machine:
    def __init__(self, job: Job, index: int):
        self.job, self.index = job, index
        self.proc: subprocess.Popen | None = None
        self.launches = 0
        self.planned_exit = False  # the next exit was asked for by a fault
        self.host = f"soak-node{index}" if job.spec.host_names else socket.gethostname()

    def command(self) -> list[str]:
        s = self.job.spec
        # Each machine its own host name where the soak may (root: a UTS namespace), so
        # what tells nodes apart (the run lock's host) differs between them as on a cluster.
        host = ["unshare", "--uts", "sh", "-c", f'hostname {self.host} && exec "$0" "$@"'] \
            if s.host_names else []
        return [*host, str(s.python_bin / "accelerate"), "launch",
                "--config_file", str(ROOT / "launch" / "multi_node.yaml"),
                "--multi_gpu", "--num_processes", "2", "--num_machines", "2",
                "--max_restarts", str(s.max_restarts),
                "--machine_rank", str(self.index), "--main_process_ip", "127.0.0.1",
                "--main_process_port", str(s.port), "--rdzv_backend", "c10d",
                "--rdzv_conf", f"is_host={int(self.index == 0)}",
                str(ROOT / "train.py"), "--config", str(ROOT / s.config), *s.overrides,
                *s.per_machine[self.index]]

    def launch(self) -> None:
        self.launches += 1
        self.planned_exit = False
        # Each machine announces its own address (PET_LOCAL_ADDR, as slurm/infogan.sh
        # sets NodeAddr): torchrun orders the nodes by it, so machine 0 stays group rank 0
        # through every restart, as on a cluster whose nodes keep their addresses.
        env = self.job.spec.env | {"PET_LOCAL_ADDR": f"127.0.0.{self.index + 1}"}
        self.proc = subprocess.Popen(self.command(), cwd=ROOT, env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self.job.note(self.index, f"soak: launched machine {self.index} (launch "
                                  f"{self.launches}, pid {self.proc.pid})")
        threading.Thread(target=self._read, args=(self.proc,), daemon=True).start()

    def _read(self, proc: subprocess.Popen) -> None:
        for raw in proc.stdout:
            self.job.note(self.index, raw.decode(errors="replace").rstrip("\n"))

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def launcher(self) -> psutil.Process | None:
        if not self.alive():
            return None
        try:
            return psutil.Process(self.proc.pid)
        except psutil.Error:
            return None

    def workers(self) -> list[psutil.Process]:
        """The training processes this launcher started (its children running train.py)."""
        launcher = self.launcher()
        if launcher is None:
            return []
        out = []
        try:
            children = launcher.children()
        except psutil.Error:
            return []
        for p in children:
            try:
                if any(a.endswith("train.py") for a in p.cmdline()):
                    out.append(p)
            except psutil.Error:
                continue
        return out

    def tree(self) -> list[psutil.Process]:
        launcher = self.launcher()
        if launcher is None:
            return []
        try:
            return [launcher, *launcher.children(recursive=True)]
        except psutil.Error:
            return [launcher]

    def kill(self) -> None:
        """SIGKILL the launcher and every process under it, at once (a machine lost)."""
        self.planned_exit = True
        procs = self.tree()
        for p in procs:
            try:
                p.send_signal(signal.SIGKILL)
            except psutil.Error:
                pass
        # the launcher is reaped by Popen (its exit status), the rest by psutil
        psutil.wait_procs(procs[1:], timeout=30)
        if self.proc is not None:
            self.proc.wait(timeout=30)


class Job:
    def __init__(self, spec: JobSpec):
        self.spec = spec
        spec.logs.mkdir(parents=True, exist_ok=True)
        self.machines = [Machine(self, 0), Machine(self, 1)]
        self.lines: list[Line] = []
        self.exits: list[Exit] = []
        self._lock = threading.Lock()
        self._files = {m: open(spec.logs / f"machine-{m}.log", "a") for m in (0, 1)}
        self.metrics = MetricsWatch(spec.run_dir / "metrics.jsonl")
        self.hold = False  # a fault stops the job: no restarts until it says so
        self.finished = False  # the soak's final stop: nothing is restarted any more

    # --- output ---------------------------------------------------------------------
    def note(self, machine: int, text: str) -> None:
        now = time.time()
        with self._lock:
            self.lines.append(Line(now, machine, text))
            f = self._files[machine]
            f.write(f"{time.strftime('%H:%M:%S', time.localtime(now))}"
                    f".{int(now % 1 * 1000):03d} {text}\n")
            f.flush()

    def lines_since(self, t: float, contains: str = "") -> list[Line]:
        with self._lock:
            return [ln for ln in self.lines if ln.t >= t and contains in ln.text]

    # --- processes ------------------------------------------------------------------
    def start(self) -> None:
        for m in self.machines:
            m.launch()

    def workers(self) -> list[psutil.Process]:
        return [w for m in self.machines for w in m.workers()]

    def spawn_times(self) -> list[float]:
        """When each live worker was created (a worker that ends meanwhile is left out)."""
        out = []
        for w in self.workers():
            try:
                out.append(w.create_time())
            except psutil.Error:
                continue
        return out

    def worker_of_rank(self, rank: int) -> psutil.Process | None:
        for w in self.workers():
            try:
                if w.environ().get("RANK") == str(rank):
                    return w
            except psutil.Error:
                continue
        return None

    def all_processes(self) -> list[psutil.Process]:
        return [p for m in self.machines for p in m.tree()]

    def signal_all(self, sig: int) -> int:
        """`sig` to every launcher and worker (Slurm's way of preempting a job)."""
        n = 0
        for p in self.all_processes():
            try:
                p.send_signal(sig)
                n += 1
            except psutil.Error:
                pass
        return n

    def tick(self) -> None:
        """One look: new rows in metrics.jsonl; launchers that exited are recorded and,
        unless held or finished, started again."""
        self.metrics.poll()
        for m in self.machines:
            if m.proc is None or m.proc.poll() is None:
                continue
            code = m.proc.returncode
            self.exits.append(Exit(time.time(), m.index, code, m.planned_exit))
            self.note(m.index, f"soak: machine {m.index} launcher exited with {code}"
                               f"{' (planned)' if m.planned_exit else ''}")
            m.proc = None
            if not (self.hold or self.finished):
                m.launch()

    def wait(self, cond: Callable[[], object], timeout: float, what: str,
             poll_s: float = 0.1) -> object:
        """Tick until `cond()` is true (a deadline, not a sleep: the condition decides)."""
        end = time.monotonic() + timeout
        while True:
            self.tick()
            value = cond()
            if value:
                return value
            if time.monotonic() > end:
                raise SoakError(f"{what}: not after {timeout:.0f} s")
            time.sleep(poll_s)

    def relaunch_stopped(self) -> None:
        """After a held stop: start every machine whose launcher is gone (a requeue)."""
        self.tick()
        for m in self.machines:
            if m.proc is None:
                m.launch()

    def all_exited(self) -> bool:
        self.tick()
        return all(m.proc is None for m in self.machines)

    def stop_everything(self) -> None:
        """SIGKILL whatever is left of the job (the end of the soak, or an abort)."""
        self.finished = True
        for m in self.machines:
            if m.alive():
                m.kill()
        self.tick()

    def close(self) -> None:
        for f in self._files.values():
            f.close()


def environment(base: dict[str, str], extra: dict[str, str]) -> dict[str, str]:
    """The launchers' environment: slurm/infogan.sh's variables, one thread per process
    (two processes share two cores), CPU only, plus `extra` (S3 endpoint and keys, the
    fault file, TMPDIR)."""
    env = dict(base)
    env.pop("WANDB_API_KEY", None)
    signals = "SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1"
    env.update(TORCHELASTIC_SIGNALS_TO_HANDLE=signals, PET_SIGNALS_TO_HANDLE=signals,
               TORCH_DISABLE_SHARE_RDZV_TCP_STORE="1", PET_LOCAL_ADDR="127.0.0.1",
               PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="",
               WANDB_SILENT="true")
    env.update(extra)
    pythonpath = [str(ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(pythonpath))
    return env
