"""``fer-agent report EVENTS.jsonl -o run.png``: a picture of a run, from what ``fer-agent record`` wrote.

Three panels on one time axis (seconds from the first message):

1. one band per face, coloured by the label its events carried (from
   ``appeared``/``changed`` until the next event of that face or ``left``);
2. the share of face-time per label, per second, rebuilt from those bands;
3. the face count from the retained ``state`` messages.

matplotlib comes from the ``report`` extra and is imported only here.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from agent.contracts.errors import FerError
from agent.contracts.labels import LABELS

# One colour per label, fixed so that every report reads the same.
COLOURS = {"angry": "#d62728", "disgust": "#8c564b", "fear": "#9467bd", "happy": "#2ca02c", "sad": "#1f77b4",
           "surprise": "#ff7f0e", "neutral": "#7f7f7f"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("events", metavar="EVENTS.jsonl", help="a recording made by fer-agent record")
    p.add_argument("-o", "--output", required=True, metavar="PNG", help="image to write (.png)")
    p.add_argument("--title", help="title of the picture (default: the device id and the date)")


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


@dataclass
class Band:
    face_id: int
    start: float
    end: float
    label: str


@dataclass
class Run:
    device_id: str
    bands: list[Band]
    counts: list[tuple[float, int]]  # (time, face_count) from state
    t0: float
    t1: float


def load(path: Path) -> Run:
    """The recording as face bands and face counts; one clear error for a line that is not a recording."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise FerError(f"{path}: cannot read: {exc.strerror}") from None
    events: list[dict[str, Any]] = []
    counts: list[tuple[float, int]] = []
    devices: set[str] = set()
    seen_ids: set[str] = set()
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            topic, payload = rec["topic"], rec["payload"]
        except (json.JSONDecodeError, KeyError, TypeError):
            raise FerError(f"{path}:{n}: not a line written by fer-agent record") from None
        if not isinstance(payload, dict):
            continue
        if topic.endswith("/events") and payload.get("event_id") not in seen_ids:  # QoS 1 may deliver twice
            seen_ids.add(payload.get("event_id"))
            events.append(payload)
            devices.add(payload.get("device_id", ""))
        elif topic.endswith("/state") and not rec.get("retained"):
            counts.append((_epoch(payload["time"]), int(payload["face_count"])))
    if not events:
        raise FerError(f"{path}: no events in this recording")
    events.sort(key=lambda e: (e["capture_time"], e.get("seq", 0)))
    times = [_epoch(e["capture_time"]) for e in events] + [t for t, _ in counts]
    t0, t1 = min(times), max(times)
    return Run(", ".join(sorted(d for d in devices if d)) or "?", _bands(events, t1), sorted(counts), t0, t1)


def _bands(events: list[dict[str, Any]], t_end: float) -> list[Band]:
    open_: dict[int, tuple[float, str]] = {}
    bands: list[Band] = []
    for e in events:
        t, face, label = _epoch(e["capture_time"]), int(e["face_id"]), e["label"]
        if face in open_:
            start, was = open_.pop(face)
            bands.append(Band(face, start, t, was))
        if e["type"] != "left":
            open_[face] = (t, label)
    bands += [Band(face, start, t_end, label) for face, (start, label) in open_.items()]
    return [b for b in bands if b.end > b.start]


def shares_per_second(run: Run) -> tuple[np.ndarray, np.ndarray]:
    """(bin starts relative to t0, [bins, labels] share of face-time in each 1 s bin; zero rows without faces)."""
    n = max(1, int(np.ceil(run.t1 - run.t0)))
    seconds = np.zeros((n, len(LABELS)))
    for b in run.bands:
        i = LABELS.index(b.label)
        for k in range(int((b.start - run.t0) // 1), min(n, int(np.ceil(b.end - run.t0)))):
            overlap = min(b.end - run.t0, k + 1) - max(b.start - run.t0, k)
            if overlap > 0:
                seconds[k, i] += overlap
    total = seconds.sum(axis=1, keepdims=True)
    return np.arange(n, dtype=float), np.divide(seconds, total, out=np.zeros_like(seconds), where=total > 0)


def draw(run: Run, output: Path, title: str | None = None) -> None:
    try:
        import matplotlib
    except ImportError:
        raise FerError("fer-agent report needs matplotlib (pip install 'fer-agent[report]')") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    faces = sorted({b.face_id for b in run.bands})
    fig, (ax_faces, ax_shares, ax_count) = plt.subplots(
        3, 1, figsize=(10, 2.2 + 0.35 * len(faces) + 4.0), sharex=True,
        gridspec_kw={"height_ratios": [max(1.0, 0.45 * len(faces)), 1.6, 1.0]})
    for row, face in enumerate(faces):
        for b in (b for b in run.bands if b.face_id == face):
            ax_faces.broken_barh([(b.start - run.t0, b.end - b.start)], (row - 0.4, 0.8), color=COLOURS[b.label])
    ax_faces.set_yticks(range(len(faces)), [f"face {f}" for f in faces])
    ax_faces.set_ylim(-0.6, len(faces) - 0.4)
    ax_faces.invert_yaxis()
    ax_faces.set_title(title or f"fer-agent: {run.device_id}, "
                       f"{datetime.fromtimestamp(run.t0).strftime('%Y-%m-%d %H:%M:%S')}", loc="left")
    used = [label for label in LABELS if any(b.label == label for b in run.bands)]
    ax_faces.legend(handles=[Patch(color=COLOURS[label], label=label) for label in used], loc="upper right",
                    ncol=len(used), fontsize="small", frameon=False, bbox_to_anchor=(1.0, 1.25))

    x, shares = shares_per_second(run)
    ax_shares.stackplot(np.append(x, x[-1] + 1), *np.vstack([shares, shares[-1:]]).T, step="post",
                        colors=[COLOURS[label] for label in LABELS])
    ax_shares.set_ylim(0, 1)
    ax_shares.set_ylabel("share of\nface-time")

    if run.counts:
        ct = [t - run.t0 for t, _ in run.counts]
        ax_count.step(ct, [c for _, c in run.counts], where="post", color="black")
    ax_count.set_ylabel("faces")
    ax_count.set_ylim(bottom=0)
    ax_count.yaxis.get_major_locator().set_params(integer=True)
    ax_count.set_xlabel("seconds")
    ax_count.set_xlim(0, max(1.0, run.t1 - run.t0))
    fig.tight_layout()
    try:
        fig.savefig(output, dpi=100)
    except OSError as exc:
        raise FerError(f"{output}: cannot write: {exc.strerror}") from None
    finally:
        plt.close(fig)


def report_command(args: argparse.Namespace) -> int:
    run = load(Path(args.events))
    draw(run, Path(args.output), args.title)
    faces = len({b.face_id for b in run.bands})
    print(f"{args.output}: {faces} face(s), {run.t1 - run.t0:.1f} s, device {run.device_id}")
    return 0
