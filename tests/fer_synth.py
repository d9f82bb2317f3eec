"""Synthetic FER2013-shaped data for tests: learnable, tiny, never real faces.

Class ``c`` draws a bright horizontal bar at a class-specific row on noise
(horizontal, so a flip does not turn one class into another), so a few training
steps already separate the classes - enough to test that Keras, float TFLite
and int8 TFLite agree on confident predictions.
"""

from __future__ import annotations

import csv
import gzip
from pathlib import Path

import numpy as np

from agent.contracts.labels import NUM_CLASSES


def synth_images(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % NUM_CLASSES
    rng.shuffle(y)
    x = rng.integers(0, 90, size=(n, 48, 48)).astype(np.int32)
    for i, c in enumerate(y):
        pos = 4 + 6 * c + int(rng.integers(-1, 2))
        x[i, pos : pos + 4, :] += 150
    return np.clip(x, 0, 255).astype(np.uint8), y.astype(np.int64)


def write_csv(path: Path, splits: dict[str, int], seed: int = 0) -> Path:
    """Write a FER2013-layout CSV (gzip if the name ends in .gz) with ``{Usage: rows}``."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wt", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["emotion", "pixels", "Usage"])
        for k, (usage, n) in enumerate(splits.items()):
            x, y = synth_images(n, seed + k)
            for img, label in zip(x, y, strict=False):
                w.writerow([int(label), " ".join(map(str, img.ravel())), usage])
    return path
