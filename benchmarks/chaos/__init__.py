"""The parts of benchmarks/soak.py: the job on two "machines" (job.py), what the soak
watches in the run directory (watch.py), the fault kinds (faults.py), the reference run
(reference.py) and the invariants with their report (checks.py, report.py)."""
