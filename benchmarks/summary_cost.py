"""What the audience summary costs the frame loop: ``AudienceWindow.add`` per frame, ``summary()`` per message.

``add`` runs on every frame with the tracker's tracks (0, 1 and 4 announced faces here); the loop that only
advances the clock is timed too and subtracted. Batches of ``--batch`` frames are timed and the median batch
reported (per frame).

    nice -n 19 .venv/bin/python benchmarks/summary_cost.py

Prints a markdown table and writes benchmarks/results/summary_cost.json (``--out``).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np

from agent.contracts.labels import LABELS
from agent.summary import AudienceWindow
from agent.track import Track


def _median_per_frame(w: AudienceWindow | None, tracks: list[Track], frames: int, batch: int) -> float:
    t = 1.8e9
    per = []
    for _ in range(frames // batch):
        t0 = time.perf_counter()
        for _ in range(batch):
            t += 1 / 30
            for tr in tracks:
                tr.last_seen = t
            if w is not None:
                w.add(t, tracks)
        per.append((time.perf_counter() - t0) / batch)
    return statistics.median(per)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=200_000)
    ap.add_argument("--batch", type=int, default=1_000)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "summary_cost.json"))
    args = ap.parse_args()
    tracks = [Track(i, (0.1, 0.1, 0.2, 0.2), np.full(len(LABELS), 0.1, np.float32), 0.0, 0.0, announced=True,
                    label=LABELS[i % len(LABELS)]) for i in range(4)]
    rows = {}
    for n in (0, 1, 4):
        w = AudienceWindow(LABELS, 60.0)
        cost = _median_per_frame(w, tracks[:n], args.frames, args.batch)
        base = _median_per_frame(None, tracks[:n], args.frames, args.batch)
        rows[f"add, {n} face(s)"] = (cost - base) * 1e6
    w = AudienceWindow(LABELS, 60.0)
    _median_per_frame(w, tracks[:2], 60 * 30, 100)  # a full 60 s window at 30 frames/s
    t0 = time.perf_counter()
    for _ in range(1000):
        w.summary()
    rows["summary() over a full 60 s window"] = (time.perf_counter() - t0) / 1000 * 1e6
    print("| call | µs (median) |\n|---|---|")
    for k, v in rows.items():
        print(f"| {k} | {v:.2f} |")
    Path(args.out).write_text(json.dumps({"machine": platform.machine(), "python": platform.python_version(),
                                          "us": {k: round(v, 3) for k, v in rows.items()}}, indent=2) + "\n")


if __name__ == "__main__":
    main()
