"""Calibration inputs for SNPE quantisation: N Training faces balanced across classes.

The quantiser picks each tensor's int8 range from what it sees in these
inputs, so they must look like what the board will feed: the same
preprocessing (``agent.contracts.preprocess``) and every expression represented, not
FER2013's skew towards "happy" (disgust is ~1.5 % of Training). Selection is
deterministic for a seed so two conversions of one bundle give one DLC.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from agent.contracts.errors import FerError
from agent.contracts.labels import LABELS, NUM_CLASSES
from agent.contracts.manifest import InputSpec
from agent.contracts.preprocess import image_tensor
from agent.contracts.rawtensor import write_input_list, write_raw
from host_tools.data import Split


@dataclass
class RawSet:
    """Raw tensor files written for one input list."""

    list_path: Path
    files: list[Path]
    labels: list[int] = field(default_factory=list)

    def per_class(self) -> dict[str, int]:
        counts = (
            np.bincount(np.asarray(self.labels, dtype=np.int64), minlength=NUM_CLASSES)
            if self.labels
            else np.zeros(NUM_CLASSES, int)
        )
        return {LABELS[i]: int(c) for i, c in enumerate(counts)}


def balanced_indices(y: np.ndarray, n: int, seed: int = 0, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """``n`` row indices, as equal per class as the data allows, deterministic for ``seed``.

    Faces are dealt to the classes round-robin (class order), skipping a class
    once it has given all its rows, so a rare class gives everything it has and
    the rest share the shortfall evenly.
    """
    if n <= 0:
        raise FerError(f"calibration count must be > 0, got {n}")
    if n > len(y):
        raise FerError(f"asked for {n} calibration faces but the split has only {len(y)} rows")
    rng = np.random.default_rng(seed)
    pools = [rng.permutation(np.flatnonzero(y == c)) for c in range(num_classes)]
    take = [0] * num_classes
    c = 0
    for _ in range(n):  # round-robin, skipping exhausted classes: shares differ by at most one
        while take[c] >= len(pools[c]):
            c = (c + 1) % num_classes
        take[c] += 1
        c = (c + 1) % num_classes
    idx = np.concatenate([pools[c][: take[c]] for c in range(num_classes)])
    return idx[rng.permutation(len(idx))]  # classes interleaved, like real traffic


def write_split_tensors(
    split: Split,
    indices: np.ndarray,
    spec: InputSpec,
    out_dir: Path,
    prefix: str,
    list_name: str = "input_list.txt",
    output_names: list[str] | None = None,
    input_name: str | None = None,
) -> RawSet:
    """Preprocess the chosen rows with the manifest's contract and write one raw file each plus the input list."""
    out_dir.mkdir(parents=True, exist_ok=True)
    files: list[Path] = []
    labels: list[int] = []
    for i in indices:
        label = int(split.y[i])
        path = write_raw(out_dir / f"{prefix}_{int(i):05d}_{LABELS[label]}.raw", image_tensor(split.x[i], spec))
        files.append(path.resolve())
        labels.append(label)
    lst = write_input_list(out_dir / list_name, files, output_names=output_names, input_name=input_name)
    return RawSet(lst, files, labels)


def make_calibration(split: Split, spec: InputSpec, out_dir: Path, n: int, seed: int = 0) -> RawSet:
    """The calibration input list for snpe-dlc-quant(ize): absolute paths, no output-name header."""
    return write_split_tensors(
        split, balanced_indices(split.y, n, seed), spec, out_dir, prefix="calib", list_name="calibration_list.txt"
    )
