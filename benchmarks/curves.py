"""Draw training curves from metrics.jsonl files as one PNG (matplotlib, Agg backend).

    .venv/bin/python benchmarks/curves.py --out docs/mi_curve.png \\
        --key mi/c1 --key eval/acc/c1 runs/quality-*/quality-*/metrics.jsonl

One panel per key, one line per file (labelled by its run directory), step on the x axis
(optimizer steps) and the metric on the y axis (nats for mi/*, a fraction for acc/*).
Rows without the key are skipped, so eval-only keys (eval/acc/c1) draw their own points.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display needed
import matplotlib.pyplot as plt  # noqa: E402

PANEL_W, PANEL_H, DPI = 560, 300, 100  # pixels per panel (one panel per key)
UNITS = {"mi/": "nats", "eval/mi/": "nats", "eval/acc/": "fraction correct",
         "loss/": "loss", "perf/images_per_s": "images/s"}


def series(path: Path, key: str) -> list[tuple[int, float]]:
    points = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue  # a line cut by a crash
        if row.get(key) is not None:
            points.append((row["step"], float(row[key])))
    return sorted(points)


def unit(key: str) -> str:
    return next((u for prefix, u in sorted(UNITS.items(), key=lambda x: -len(x[0]))
                 if key.startswith(prefix)), "value")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("files", nargs="+", type=Path, help="metrics.jsonl files")
    p.add_argument("--key", action="append", required=True, help="metric to draw (repeat)")
    p.add_argument("--hline", action="append", type=float, default=[],
                   help="reference value per key, in --key order (e.g. 2.3026 for ln 10)")
    p.add_argument("--out", type=Path, required=True, help="PNG to write")
    args = p.parse_args(argv)
    missing = [str(f) for f in args.files if not f.is_file()]
    if missing:
        print(f"error: no such metrics file: {missing[0]}", file=sys.stderr)
        return 2
    fig, axes = plt.subplots(len(args.key), 1, squeeze=False, dpi=DPI,
                             figsize=(PANEL_W / DPI, PANEL_H / DPI * len(args.key)))
    for i, key in enumerate(args.key):
        ax = axes[i][0]
        for f in args.files:
            s = series(f, key)
            if s:
                ax.plot([x for x, _ in s], [y for _, y in s], marker="." if len(s) < 40 else "",
                        label=f.parent.name)
        if i < len(args.hline):
            ax.axhline(args.hline[i], color="grey", linestyle="--", linewidth=1,
                       label=f"reference {args.hline[i]:g}")
        ax.set_title(key)
        ax.set_xlabel("step")
        ax.set_ylabel(f"{key} ({unit(key)})")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize="small")
        else:
            ax.text(0.5, 0.5, f"{key}: not logged", ha="center", transform=ax.transAxes)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=DPI)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
