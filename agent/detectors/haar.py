"""Haar detector: OpenCV's frontal-face cascade, searched around known faces between full searches."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from agent.boxes import iou
from agent.contracts.errors import FerError
from agent.contracts.manifest import Manifest
from agent.contracts.preprocess import Box
from agent.detectors import Detection, Detector, DetectorConfig
from agent.runtimes import BackendConfig

HAAR_WINDOW = 24  # haarcascade_frontalface_default.xml's detection window


def haar_cascade_path() -> Path:
    return Path(cv2.data.haarcascades) / "haarcascade_frontalface_default.xml"


@dataclass
class HaarConfig:
    scale_factor: float = field(default=1.15, metadata={"doc": "image pyramid step", "min": 1.01})
    min_neighbors: int = field(default=5, metadata={"doc": "detections needed to keep a box", "min": 0})
    full_frame_every: int = field(
        default=3,
        metadata={
            "doc": "search the whole frame every n-th frame and in between only around the faces found "
            "last (1 = whole frame every time; more is cheaper, and a new face is found up to n-1 frames later)",
            "min": 1,
        },
    )


class HaarDetector(Detector):
    """OpenCV's frontal-face cascade.

    With ``detector.haar.full_frame_every: n > 1`` the whole frame is searched every n-th
    frame only; in between the cascade runs in a window around each face
    found last (grown by a third of its side), scaled so that face is ~48 px,
    for sizes 0.75-1.33x of it. Faces move little between frames, so that finds them again for a
    fraction of the cost (the cascade's cost grows with the searched area); a
    new face is found at the next whole-frame search.
    """

    name = "haar"
    summary = "OpenCV's frontal-face cascade"
    config_class = HaarConfig

    def __init__(self, cfg: DetectorConfig, manifest: Manifest | None = None, backend: BackendConfig | None = None,
                 state_dir: Path | None = None) -> None:
        super().__init__(cfg, manifest, backend, state_dir)
        self.options: HaarConfig
        if not hasattr(cv2, "CascadeClassifier"):
            raise FerError(
                "detector.type: haar needs cv2.CascadeClassifier, which OpenCV 5 removed; "
                "install opencv-python-headless<5 or use detector.type: blazeface"
            )
        path = haar_cascade_path()
        self.cascade = cv2.CascadeClassifier(str(path))
        if self.cascade.empty():
            raise FerError(f"{path}: cannot load the Haar cascade")
        self._small: np.ndarray | None = None
        self._last: list[Detection] = []
        self._since_full = self.options.full_frame_every  # the first frame is searched whole

    def detect(self, frame: np.ndarray, grey: np.ndarray) -> list[Detection]:
        h, w = grey.shape[:2]
        if self._since_full + 1 >= self.options.full_frame_every or not self._last:
            self._since_full = 0
            self._last = self._finish(self._search_frame(grey), w, h)
        else:
            self._since_full += 1
            self._last = self._finish(self._search_windows(grey, self._last), w, h)
        return self._last

    def _search_frame(self, grey: np.ndarray) -> list[Detection]:
        h, w = grey.shape[:2]
        # Never shrink a min_face face below the cascade's 24x24 window: it could not be found at all.
        s = min(1.0, max(self._scale(w), HAAR_WINDOW / self.cfg.min_face))
        img = grey
        if s != 1.0:
            size = (int(round(w * s)), int(round(h * s)))
            if self._small is None or self._small.shape[::-1] != size:
                self._small = np.empty(size[::-1], dtype=np.uint8)
            img = cv2.resize(grey, size, dst=self._small, interpolation=cv2.INTER_AREA)
        return self._cascade(img, s, max(HAAR_WINDOW, int(self.cfg.min_face * s)), 0, 0, 0)

    def _search_windows(self, grey: np.ndarray, previous: list[Detection]) -> list[Detection]:
        h, w = grey.shape[:2]
        found: list[Detection] = []
        for prev in previous:
            b = prev.box
            side = max(b.w, b.h)
            pad = side // 3
            x0, y0 = max(0, b.x - pad), max(0, b.y - pad)
            x1, y1 = min(w, b.x + b.w + pad), min(h, b.y + b.h + pad)
            s = min(1.0, 2 * HAAR_WINDOW / side)
            crop = grey[y0:y1, x0:x1]
            img = cv2.resize(crop, None, fx=s, fy=s, interpolation=cv2.INTER_AREA) if s < 1.0 else crop
            lo = max(HAAR_WINDOW, int(0.75 * side * s))
            dets = self._cascade(img, s, lo, int(1.33 * side * s) + 1, x0, y0)
            if dets:
                best = max(dets, key=lambda d: d.box.w)
                if all(iou(_xywh(best.box), _xywh(f.box)) < 0.5 for f in found):  # two windows, one face
                    found.append(best)
        return found

    def _cascade(self, img: np.ndarray, s: float, min_side: int, max_side: int, ox: int, oy: int) -> list[Detection]:
        """Run the cascade on ``img`` (the frame or a window, scaled by ``s``, at offset ox, oy in the frame)."""
        rects = self.cascade.detectMultiScale(
            img,
            scaleFactor=self.options.scale_factor,
            minNeighbors=self.options.min_neighbors,
            minSize=(min_side, min_side),
            maxSize=(max_side, max_side),
        )
        return [
            Detection(Box(ox + int(round(x / s)), oy + int(round(y / s)), int(round(bw / s)), int(round(bh / s))), 1.0)
            for (x, y, bw, bh) in (rects if len(rects) else [])
        ]


def _xywh(b: Box) -> tuple[float, float, float, float]:
    return (b.x, b.y, b.w, b.h)
