"""FER+ crowd votes as training targets (``fer-host train --labels ferplus``).

FER2013's labels come from one keyword search each and are wrong or ambiguous on about one face in ten;
Microsoft's FER+ relabelling asked 10 taggers per image (MIT licence; Barsoum et al., ICMI 2016). Training
on the vote distribution instead of the one-hot label teaches the network which faces are ambiguous and
which images are no usable face at all, which is what a real camera shows it more often than FER2013 does.

The votes file sits beside the FER2013 CSV and is aligned with it row by row
(``ferplus_train_publictest.csv.gz``: ``row, Usage, emotion`` then ten vote columns). Alignment is checked:
every split's rows must agree in number, ``Usage`` and ``emotion`` with the loaded data set, so a different
CSV (or one loaded with skipped rows) is refused in one line instead of silently mislabelling faces.

Targets (FER+'s "probability" mode, mapped to FER2013's seven classes):
- the seven expression columns are taken in FER2013 order; ``contempt`` has no FER2013 class and its votes
  are dropped;
- a row is dropped when ``unknown`` or ``NF`` (not a face) holds the most votes, or when no vote falls on
  the seven classes;
- the target is the seven vote counts divided by their sum, optionally blended with the FER2013 one-hot
  label (``weight`` < 1), so a run can keep some of FER2013's own labelling, which PublicTest still scores.
"""

from __future__ import annotations

import csv
import gzip
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from agent.contracts.errors import FerError
from agent.contracts.labels import NUM_CLASSES

FILE_NAME = "ferplus_train_publictest.csv.gz"
#: FER+ vote columns in FER2013's class order (angry, disgust, fear, happy, sad, surprise, neutral).
EXPRESSION_COLUMNS = ("anger", "disgust", "fear", "happiness", "sadness", "surprise", "neutral")
UNUSABLE_COLUMNS = ("unknown", "NF")
VOTE_COLUMNS = (*EXPRESSION_COLUMNS, "contempt", *UNUSABLE_COLUMNS)


@dataclass(frozen=True)
class Votes:
    """One split's votes: ``counts`` [N, 10] in :data:`VOTE_COLUMNS` order, ``emotion`` the FER2013 label copy."""

    counts: np.ndarray
    emotion: np.ndarray

    def __len__(self) -> int:
        return len(self.emotion)


def default_path(data: str | Path) -> Path:
    """Where the votes file is expected: beside the FER2013 file."""
    return Path(data).parent / FILE_NAME


def load(path: str | Path) -> dict[str, Votes]:
    """Read the votes file into one :class:`Votes` per ``Usage``; errors name the file and row."""
    path = Path(path)
    if not path.is_file():
        raise FerError(f"{path}: FER+ votes file not found (--labels ferplus reads it; pass --ferplus PATH)")
    rows: dict[str, tuple[list[list[int]], list[int]]] = {}
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt", encoding="utf-8", newline="") as fh:
            reader = csv.DictReader(fh)
            missing = [c for c in ("Usage", "emotion", *VOTE_COLUMNS) if c not in (reader.fieldnames or [])]
            if missing:
                raise FerError(f"{path}: row 1: missing column(s) {', '.join(missing)}")
            for rowno, row in enumerate(reader, start=2):
                try:
                    counts = [int(row[c]) for c in VOTE_COLUMNS]
                    emotion = int(row["emotion"])
                except (TypeError, ValueError):
                    raise FerError(f"{path}: row {rowno}: vote counts and emotion must be integers") from None
                if min(counts) < 0:
                    raise FerError(f"{path}: row {rowno}: negative vote count")
                split = rows.setdefault(row["Usage"], ([], []))
                split[0].append(counts)
                split[1].append(emotion)
    except (OSError, EOFError, UnicodeDecodeError, csv.Error) as exc:
        raise FerError(f"{path}: cannot read: {exc}") from None
    return {
        usage: Votes(np.asarray(c, dtype=np.float32).reshape(-1, len(VOTE_COLUMNS)), np.asarray(e, dtype=np.int64))
        for usage, (c, e) in rows.items()
    }


def check_aligned(votes: Votes, labels: np.ndarray, split: str, path: str | Path) -> None:
    """Refuse votes that do not belong row by row to ``labels`` (the loaded split's FER2013 labels)."""
    if len(votes) != len(labels):
        raise FerError(
            f"{path}: {len(votes)} {split} rows, the data set has {len(labels)}; the votes align row by row "
            "with the FER2013 file they were made for (load it without skipped rows)"
        )
    bad = np.flatnonzero(votes.emotion != labels)
    if bad.size:
        raise FerError(
            f"{path}: {split} row {int(bad[0])}: emotion {int(votes.emotion[bad[0]])} differs from the data set's "
            f"{int(labels[bad[0]])} ({bad.size} rows differ): not the FER2013 file these votes were made for"
        )


def usable(votes: Votes) -> np.ndarray:
    """Rows worth training on: some votes on the seven classes, and neither unknown nor NF holding the most."""
    expr = votes.counts[:, : len(EXPRESSION_COLUMNS)]
    worst = votes.counts[:, len(EXPRESSION_COLUMNS) + 1 :].max(axis=1)  # unknown, NF
    return (expr.sum(axis=1) > 0) & (worst < votes.counts[:, : len(EXPRESSION_COLUMNS) + 1].max(axis=1))


def targets(votes: Votes, labels: np.ndarray, weight: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """``(targets [M, 7], keep [N] bool)``: the vote distribution over the usable rows, blended as
    ``weight * votes + (1 - weight) * one-hot(label)``."""
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"needs 0 <= weight <= 1, got {weight}")
    keep = usable(votes)
    expr = votes.counts[keep, : len(EXPRESSION_COLUMNS)]
    dist = expr / expr.sum(axis=1, keepdims=True)
    one_hot = np.eye(NUM_CLASSES, dtype=np.float32)[labels[keep]]
    return (weight * dist + (1.0 - weight) * one_hot).astype(np.float32), keep
