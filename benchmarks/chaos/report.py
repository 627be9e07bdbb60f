"""The soak's report: report.json (everything) and report.md (the tables), per fault kind
how many were injected and recovered without a person and the time from the fault to
the next completed step (median, max), where that time went, and each invariant with
its figure."""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .checks import Check

PHASES = ("detect_s", "restart_s", "startup_s", "first_step_s")


@dataclass
class FaultRecord:
    index: int
    kind: str
    at_s: float  # seconds into the soak
    at_step: int  # the last step logged when it was injected
    injected: bool = False
    recovered: bool = False  # a step again, no launcher started that the fault did not plan
    recovered_s: float | None = None  # fault -> next completed step
    next_step: int | None = None
    relaunches: int = 0  # launchers started again meanwhile (planned ones included)
    unplanned_exits: list[str] = field(default_factory=list)
    phases: dict[str, float] = field(default_factory=dict)
    detail: dict = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def line(self) -> str:
        struck = self.detail.get("struck_by")
        if not self.injected:
            state = "NOT INJECTED"
        elif not self.recovered or self.next_step is None:
            state = "NOT RECOVERED"
        elif struck or self.recovered_s is None:
            state = f"recovered with fault {struck} (step {self.next_step})"
        else:
            state = f"recovered in {self.recovered_s:.1f} s (step {self.next_step})"
        if self.detail.get("during_recovery_of"):
            state += f", struck the recovery of fault {self.detail['during_recovery_of']}"
        extra = "; ".join(self.problems + self.unplanned_exits)
        return (f"fault {self.index:3d} {self.kind:<14} at {self.at_s:7.1f} s, step "
                f"{self.at_step}: {state}{' (' + extra + ')' if extra else ''}")


def _stat(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{statistics.median(values):.1f} / {max(values):.1f}"


def by_kind(records: list[FaultRecord]) -> list[dict]:
    rows = []
    for kind in sorted({r.kind for r in records}):
        rs = [r for r in records if r.kind == kind]
        times = [r.recovered_s for r in rs if r.recovered and r.recovered_s is not None]
        row = {"kind": kind, "injected": sum(r.injected for r in rs),
               "recovered": sum(r.recovered for r in rs),
               "median_s": round(statistics.median(times), 2) if times else None,
               "max_s": round(max(times), 2) if times else None}
        for ph in PHASES:
            vals = [r.phases[ph] for r in rs if r.recovered and ph in r.phases]
            row[f"median_{ph}"] = round(statistics.median(vals), 2) if vals else None
        rows.append(row)
    return rows


def write_report(out: Path, meta: dict, records: list[FaultRecord],
                 results: list[Check]) -> bool:
    """Writes report.json and report.md; True when everything held."""
    kinds = by_kind(records)
    ok = (not meta.get("error") and bool(results) and all(c.passed for c in results)
          and all(r.recovered for r in records))
    deaths = [r for r in records if r.kind in ("rank_kill", "kill_in_save") and r.recovered
              and r.recovered_s is not None]
    summary = {
        "faults": len(records), "kinds": len(kinds),
        "recovered_without_a_person": sum(r.recovered for r in records),
        "rank_death_to_next_step_median_s": round(statistics.median(
            [r.recovered_s for r in deaths]), 2) if deaths else None,
        "passed": ok,
    }
    data = {"meta": meta, "summary": summary, "kinds": kinds,
            "invariants": [asdict(c) for c in results], "faults": [asdict(r) for r in records]}
    (out / "report.json").write_text(json.dumps(data, indent=1) + "\n")

    md = [f"# Soak report: {'PASSED' if ok else 'FAILED'}", "",
          f"`{meta['command']}`, commit {meta['commit']}, started {meta['started']}, "
          f"{meta['soak_s']:.0f} s of faults, final step {meta['final_step']}; {meta['machine']}.",
          ""]
    if meta.get("error"):
        md += ["**The soak itself stopped:**", "", "```", meta["error"].rstrip(), "```", ""]
    death = summary["rank_death_to_next_step_median_s"]
    md += [f"{summary['faults']} faults of {summary['kinds']} kinds, "
           f"{summary['recovered_without_a_person']} recovered without a person; a rank's "
           f"death to the next completed step: median {death} s.",
           "", "| fault kind | injected | recovered without a person | fault -> next step, "
           "median / max (s) | of which detect / restart / start-up / first step, medians (s) |",
           "| --- | ---: | ---: | ---: | --- |"]
    for row in kinds:
        rs = [r for r in records if r.kind == row["kind"]]
        times = [r.recovered_s for r in rs if r.recovered and r.recovered_s is not None]
        ph = " / ".join("-" if row[f"median_{p}"] is None else f"{row[f'median_{p}']:.1f}"
                        for p in PHASES)
        md.append(f"| {row['kind']} | {row['injected']} | {row['recovered']} | "
                  f"{_stat(times)} | {ph} |")
    parts: dict[str, list[float]] = {}
    for r in records:
        for name, value in r.phases.get("startup_parts", {}).items():
            parts.setdefault(name, []).append(value)
    if parts:
        md += ["", "Start-up of the restarted rank 0, by its own account (medians over "
               f"{max(len(v) for v in parts.values())} restarts, s):", "",
               "| " + " | ".join(parts) + " |", "|" + " ---: |" * len(parts),
               "| " + " | ".join(f"{statistics.median(v):.1f}" for v in parts.values()) + " |"]
    md += ["", "| invariant | holds | figure |", "| --- | --- | --- |"]
    for c in results:
        md.append(f"| {c.name} | {'yes' if c.passed else '**NO**'} | {c.figure} |")
    failed = [c for c in results if not c.passed]
    if failed:
        md += ["", "Failures:", ""]
        for c in failed:
            md += [f"- {c.name}: {f}" for f in c.failures[:10]]
    md += ["", f"torch's launch log directories left in tmp/ (one per launch; torch's, not "
           f"judged): {meta.get('torchelastic_dirs_left', 0)}."]
    md += ["", "Faults in order:", "", "```"] + [r.line() for r in records] + ["```", ""]
    (out / "report.md").write_text("\n".join(md))
    return ok
