"""``--preview PATH``: annotated frames for a person to look at.

Boxes, face id, smoothed label and a bar per label. ``PATH`` ending in
.mp4/.avi/.mkv is a video (OpenCV's writer, at the source's rate when known);
anything else is a directory of PNG frames.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import cv2
import numpy as np

from agent.contracts.errors import FerError
from agent.contracts.events import FaceState

log = logging.getLogger(__name__)

@dataclass
class PreviewConfig:
    path: Optional[str] = field(
        default=None,
        metadata={"doc": "write annotated frames: a .mp4/.avi file, or a directory for PNG frames; empty = off"},
    )
    every_n: int = field(default=1, metadata={"doc": "annotate every n-th frame", "min": 1})


VIDEO_SUFFIXES = {".mp4": "mp4v", ".avi": "MJPG", ".mkv": "mp4v"}
_GREEN, _WHITE, _GREY = (80, 220, 80), (255, 255, 255), (70, 70, 70)


def annotate(image: np.ndarray, faces: list[FaceState], labels: tuple[str, ...], footer: str = "") -> np.ndarray:
    """A copy of ``image`` with each face's box, id, label and probability bars."""
    out = image.copy()
    h, w = out.shape[:2]
    for face in faces:
        x, y, bw, bh = (int(round(v)) for v in (face.box[0] * w, face.box[1] * h, face.box[2] * w, face.box[3] * h))
        cv2.rectangle(out, (x, y), (x + bw, y + bh), _GREEN, 2)
        title = f"#{face.face_id} {face.label} {face.confidence:.0%}"
        cv2.putText(out, title, (x, max(12, y - 6)), cv2.FONT_HERSHEY_SIMPLEX, 0.5, _GREEN, 1, cv2.LINE_AA)
        bx = x + bw + 6 if x + bw + 130 < w else max(0, x - 130)
        panel = out[max(0, y - 2) : min(h, y + 14 * len(labels)), bx : min(w, bx + 124)]
        panel //= 3  # darken behind the bars so the text reads on any background
        for i, name in enumerate(labels):
            p = float(face.probabilities.get(name, 0.0))
            yy = y + i * 14
            if yy + 12 > h:
                break
            cv2.rectangle(out, (bx, yy), (bx + 60, yy + 10), _GREY, -1)
            cv2.rectangle(out, (bx, yy), (bx + int(60 * p), yy + 10), _GREEN if name == face.label else _WHITE, -1)
            cv2.putText(out, name, (bx + 64, yy + 9), cv2.FONT_HERSHEY_SIMPLEX, 0.35, _WHITE, 1, cv2.LINE_AA)
    if footer:
        cv2.putText(out, footer, (6, h - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.45, _WHITE, 1, cv2.LINE_AA)
    return out


class PreviewWriter:
    def __init__(self, path: str | Path, labels: tuple[str, ...], fps: float = 15.0, every_n: int = 1) -> None:
        self.path = Path(path).expanduser()
        self.labels = labels
        self.fps = fps if fps > 0 else 15.0
        self.every_n = max(1, every_n)
        self.written = 0
        self._writer: cv2.VideoWriter | None = None
        self.video = self.path.suffix.lower() in VIDEO_SUFFIXES
        parent = self.path.parent if self.video else self.path
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise FerError(f"--preview: cannot create {parent}: {exc.strerror}") from None

    def write(self, image: np.ndarray, faces: list[FaceState], frame_number: int, footer: str = "") -> None:
        if frame_number % self.every_n:
            return
        out = annotate(image, faces, self.labels, footer)
        if self.video:
            if self._writer is None:
                fourcc = cv2.VideoWriter_fourcc(*VIDEO_SUFFIXES[self.path.suffix.lower()])
                self._writer = cv2.VideoWriter(str(self.path), fourcc, self.fps, (out.shape[1], out.shape[0]))
                if not self._writer.isOpened():
                    raise FerError(f"--preview: OpenCV cannot write {self.path}")
            self._writer.write(out)
        elif not cv2.imwrite(str(self.path / f"frame_{frame_number:06d}.png"), out):
            raise FerError(f"--preview: cannot write PNG frames into {self.path}")
        self.written += 1

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None
        if self.written:
            log.info("preview: %d annotated frame(s) in %s", self.written, self.path)
