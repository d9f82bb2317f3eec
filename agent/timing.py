"""Per-stage timing: rolling mean and p95 over the last N samples.

Recording is a store into a preallocated ring buffer (no allocation, no lock:
only the frame loop writes); the summary is computed when stats are due.
"""

from __future__ import annotations

import time

import numpy as np

STAGES = ("capture", "detect", "preprocess", "infer", "interpret", "publish", "total")


class StageTimes:
    def __init__(self, window: int = 512, stages: tuple[str, ...] = STAGES) -> None:
        self.window = window
        self._buf = {s: np.zeros(window, dtype=np.float64) for s in stages}
        self._n = {s: 0 for s in stages}

    def add(self, stage: str, seconds: float) -> None:
        if stage not in self._buf:
            self._buf[stage] = np.zeros(self.window, dtype=np.float64)
            self._n[stage] = 0
        n = self._n[stage]
        self._buf[stage][n % self.window] = seconds
        self._n[stage] = n + 1

    def summary(self) -> dict[str, dict[str, float]]:
        """``{stage: {"mean_ms", "p95_ms"}}`` for every stage with samples (the stats message format)."""
        out = {}
        for stage, buf in self._buf.items():
            n = min(self._n[stage], self.window)
            if n:
                vals = buf[:n] * 1000.0
                out[stage] = {
                    "mean_ms": round(float(vals.mean()), 3),
                    "p95_ms": round(float(np.percentile(vals, 95)), 3),
                }
        return out

    def format(self) -> str:
        return (
            ", ".join(f"{k} {v['mean_ms']:.2f}/{v['p95_ms']:.2f}" for k, v in self.summary().items()) + " ms (mean/p95)"
        )


class RateMeter:
    """Frames per second over a sliding window of timestamps."""

    def __init__(self, window: int = 120) -> None:
        self._t = np.zeros(window, dtype=np.float64)
        self._n = 0

    def tick(self, now: float | None = None) -> None:
        self._t[self._n % len(self._t)] = time.monotonic() if now is None else now
        self._n += 1

    def rate(self) -> float:
        n = min(self._n, len(self._t))
        if n < 2:
            return 0.0
        newest = self._t[(self._n - 1) % len(self._t)]
        oldest = self._t[(self._n - n) % len(self._t)]
        return (n - 1) / (newest - oldest) if newest > oldest else 0.0
