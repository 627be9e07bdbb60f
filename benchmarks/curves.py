"""Draw training curves from metrics.jsonl files as one PNG (no plotting dependency).

    .venv/bin/python benchmarks/curves.py --out docs/mi_curve.png \\
        --key mi/c1 --key eval/acc/c1 runs/quality-*/quality-*/metrics.jsonl

One panel per key, one line per file (labelled by its run directory), step on the x axis.
Rows without the key are skipped, so eval-only keys (eval/acc/c1) draw their own points.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from PIL import Image, ImageDraw

PANEL_W, PANEL_H, MARGIN = 560, 300, 48
COLOURS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
           (140, 86, 75), (227, 119, 194), (127, 127, 127)]


def series(path: Path, key: str) -> list[tuple[int, float]]:
    points = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue  # a line cut by a crash
        if key in row:
            points.append((row["step"], float(row[key])))
    return sorted(points)


def draw_panel(draw: ImageDraw.ImageDraw, top: int, key: str,
               lines: list[tuple[str, list[tuple[int, float]]]],
               hline: float | None) -> None:
    pts = [p for _, s in lines for p in s]
    if not pts:
        draw.text((MARGIN, top + PANEL_H // 2), f"{key}: not logged", fill="black")
        return
    x1 = max(p[0] for p in pts) or 1
    lo = min(p[1] for p in pts + ([(0, hline)] if hline is not None else []))
    hi = max(p[1] for p in pts + ([(0, hline)] if hline is not None else []))
    lo, hi = (lo - 0.05 * (hi - lo or 1), hi + 0.05 * (hi - lo or 1))
    left, right, bottom = MARGIN, PANEL_W - 10, top + PANEL_H - 24

    def xy(step: int, v: float) -> tuple[float, float]:
        return (left + (right - left) * step / x1,
                bottom - (bottom - top - 20) * (v - lo) / (hi - lo))

    draw.rectangle([left, top + 20, right, bottom], outline="black")
    draw.text((left, top + 4), key, fill="black")
    for v in (lo, (lo + hi) / 2, hi):
        draw.text((2, xy(0, v)[1] - 6), f"{v:.3g}", fill="black")
    draw.text((right - 60, bottom + 6), f"step {x1}", fill="black")
    if hline is not None:
        draw.line([xy(0, hline), xy(x1, hline)], fill=(160, 160, 160), width=1)
    for i, (label, s) in enumerate(lines):
        colour = COLOURS[i % len(COLOURS)]
        if len(s) > 1:
            draw.line([xy(*p) for p in s], fill=colour, width=2)
        for p in s:
            x, y = xy(*p)
            draw.ellipse([x - 2, y - 2, x + 2, y + 2], fill=colour)
        draw.text((left + 6, top + 24 + 12 * i), label, fill=colour)


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
    img = Image.new("RGB", (PANEL_W, PANEL_H * len(args.key)), "white")
    draw = ImageDraw.Draw(img)
    for i, key in enumerate(args.key):
        lines = [(f.parent.name, series(f, key)) for f in args.files]
        hline = args.hline[i] if i < len(args.hline) else None
        draw_panel(draw, i * PANEL_H, key, lines, hline)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    img.save(args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
