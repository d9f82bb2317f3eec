"""Synthetic frames of a real face: the demo clip, the benchmark frames and the tests' faces.

Everything is made at run time from the public-domain astronaut photo that
scikit-image ships (Eileen Collins, NASA), so the demo, ``fer-agent bench``,
the benchmarks and the tests all look at the same real face and nothing is
downloaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from agent.contracts.errors import FerError

FRAME_W, FRAME_H = 640, 480
# The face inside skimage.data.astronaut() (512x512), as x0, y0, x1, y1.
ASTRONAUT_FACE = (170, 40, 290, 180)


def astronaut_bgr() -> np.ndarray:
    """The 512x512 astronaut photo as BGR uint8 (bundled with scikit-image; nothing is downloaded)."""
    try:
        from skimage import data
    except ImportError:
        raise FerError("the demo source needs scikit-image (pip install 'fer-agent[emulation]')") from None
    return cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)


def _patch_window() -> tuple[int, int, int]:
    """Square window (x0, y0, side) of the photo around the face, with hair and shoulders."""
    x0, y0, x1, y1 = ASTRONAUT_FACE
    cx, cy = (x0 + x1) // 2, (y0 + y1) // 2
    half = min(int(max(x1 - x0, y1 - y0) * 0.9), cx, cy)
    return cx - half, cy - half, 2 * half


def face_patch(size: int, flip: bool = False, photo: np.ndarray | None = None) -> np.ndarray:
    """A square crop around the astronaut's face, ``size`` px (mirrored with ``flip``)."""
    photo = astronaut_bgr() if photo is None else photo
    wx, wy, side = _patch_window()
    patch = cv2.resize(photo[wy : wy + side, wx : wx + side], (size, size), interpolation=cv2.INTER_AREA)
    return patch[:, ::-1].copy() if flip else patch


def face_in_patch(size: int, flip: bool = False) -> tuple[int, int, int, int]:
    """Where the face lies inside :func:`face_patch` (x, y, w, h), for checking detectors."""
    wx, wy, side = _patch_window()
    s = size / side
    x0, y0, x1, y1 = ASTRONAUT_FACE
    x, y, w, h = (x0 - wx) * s, (y0 - wy) * s, (x1 - x0) * s, (y1 - y0) * s
    if flip:
        x = size - x - w
    return int(round(x)), int(round(y)), int(round(w)), int(round(h))


def background(w: int = FRAME_W, h: int = FRAME_H) -> np.ndarray:
    """A soft vertical gradient: something for the detector to reject."""
    ramp = np.linspace(60, 140, h, dtype=np.float32)[:, None, None]
    return np.broadcast_to(ramp * np.array([1.0, 0.95, 0.9], np.float32), (h, w, 3)).astype(np.uint8)


def paste(canvas: np.ndarray, patch: np.ndarray, x: int, y: int) -> None:
    """Paste ``patch`` with its top-left at (x, y), clipped to the canvas."""
    h, w = canvas.shape[:2]
    ph, pw = patch.shape[:2]
    x0, y0, x1, y1 = max(0, x), max(0, y), min(w, x + pw), min(h, y + ph)
    if x1 > x0 and y1 > y0:
        canvas[y0:y1, x0:x1] = patch[y0 - y : y1 - y, x0 - x : x1 - x]


def grid_spots(n_faces: int, size: int = 200) -> list[tuple[int, int]]:
    if n_faces == 1:
        return [((FRAME_W - size) // 2, (FRAME_H - size) // 2)]
    return [(40, 20), (400, 20), (40, 260), (400, 260)][:n_faces]


def grid_frame(n_faces: int, size: int = 200, photo: np.ndarray | None = None) -> np.ndarray:
    """A 640x480 frame with ``n_faces`` (1-4) astronaut faces in a 2x2 grid (benchmarks, tests)."""
    frame = background()
    photo = astronaut_bgr() if photo is None else photo
    for i, (x, y) in enumerate(grid_spots(n_faces, size)):
        paste(frame, face_patch(size, flip=i % 2 == 1, photo=photo), x, y)
    return frame


def grid_faces(n_faces: int, size: int = 200) -> list[tuple[int, int, int, int]]:
    """The true face boxes (x, y, w, h) in :func:`grid_frame`."""
    out = []
    for i, (x, y) in enumerate(grid_spots(n_faces, size)):
        fx, fy, fw, fh = face_in_patch(size, flip=i % 2 == 1)
        out.append((x + fx, y + fy, fw, fh))
    return out


def clip_frames(seconds: float = 6.0, fps: float = 15.0) -> Iterator[np.ndarray]:
    """The demo clip: the astronaut drifts and zooms in; a second (mirrored) one joins; both leave before the end."""
    photo = astronaut_bgr()
    n = int(round(seconds * fps))
    bg = background()
    for i in range(n):
        t = i / max(1, n - 1)
        frame = bg.copy()
        if t < 0.65:
            size = int(170 + 120 * t)
            paste(frame, face_patch(size, photo=photo), int(60 + 240 * t), int(120 - 80 * t))
        if 0.3 <= t < 0.75:
            paste(frame, face_patch(150, flip=True, photo=photo), 460 - int(60 * (t - 0.3)), 290)
        yield frame


def write_clip(path: str | Path, seconds: float = 6.0, fps: float = 15.0) -> Path:
    """Write :func:`clip_frames` as MP4 (OpenCV's mp4v encoder; no external tools)."""
    path = Path(path)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (FRAME_W, FRAME_H))
    if not writer.isOpened():
        raise FerError(f"{path}: OpenCV cannot write MP4 here")
    try:
        for frame in clip_frames(seconds, fps):
            writer.write(frame)
    finally:
        writer.release()
    return path
