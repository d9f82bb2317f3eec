"""What every capture source shares: its config section, the frame it hands out, the base class.

:mod:`agent.capture` builds the sources; :mod:`agent.live_source` reads cameras
and streams in a thread. Both build on :class:`FrameSource` here.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Optional

import cv2
import numpy as np


@dataclass
class SourceConfig:
    uri: str = field(
        default="0",
        metadata={
            "doc": "camera index (0), /dev/videoN, video file, image file or directory, "
            "rtsp://... or http://... URL, or a GStreamer pipeline ending in appsink"
        },
    )
    fps_cap: float = field(
        default=0.0,
        metadata={"doc": "process at most this many frames/s (0 = as fast as frames come)", "min": 0.0,
                  "min_if_set": 0.01},
    )
    width: int = field(
        default=0, metadata={"doc": "requested capture width for cameras (0 = driver default)", "min": 0}
    )
    height: int = field(
        default=0, metadata={"doc": "requested capture height for cameras (0 = driver default)", "min": 0}
    )
    live: Optional[bool] = field(
        default=None,
        metadata={
            "doc": "treat as a live source: read in a thread, keep the newest frame, count drops, "
            "reopen when it fails; empty = cameras, URLs and GStreamer are live, files are not"
        },
    )
    realtime: bool = field(
        default=False,
        metadata={
            "doc": "files only: play at the file's own frame rate and skip frames when behind (default: every frame)"
        },
    )
    loop: bool = field(
        default=False, metadata={"doc": "files and image folders: start again at the end instead of stopping"}
    )
    reopen_initial_s: float = field(
        default=0.5, metadata={"doc": "first wait before reopening a dropped live source", "min": 0.0}
    )
    reopen_max_s: float = field(
        default=30.0, metadata={"doc": "longest wait between reopen attempts (doubles up to this)", "min": 0.0}
    )


@dataclass
class Frame:
    image: np.ndarray  # H x W x 3 BGR uint8
    capture_time: float  # UNIX seconds when the frame was read


class FrameSource:
    """Base: pacing (``fps_cap``) and the counters every source reports."""

    live = False

    def __init__(self, cfg: SourceConfig, description: str) -> None:
        self.cfg = cfg
        self.description = description
        self.dropped = 0  # frames produced by the source that were never analysed
        self.reopens = 0
        self.ended = False
        self.nominal_fps = 0.0  # the source's own frame rate when it says (files, some cameras)
        self.last_wait = 0.0  # seconds the last read() spent waiting (pacing, a live frame), not working
        self._next_due = 0.0

    def open(self) -> None:
        """Open now; a bad path or URL raises :class:`FerError` naming it."""

    def read(self) -> Frame | None:
        raise NotImplementedError

    def close(self) -> None:
        """Release the device or file; safe to call twice."""

    def trouble(self) -> str | None:
        """Why no frame comes now (a live source being retried), for systemd's STATUS and the health file."""
        return None

    def _pace(self) -> None:
        """Sleep so frames are returned at most ``fps_cap`` per second."""
        if self.cfg.fps_cap <= 0:
            return
        now = time.monotonic()
        if now < self._next_due:
            self._sleep(self._next_due - now)
            now = self._next_due
        self._next_due = max(self._next_due, now) + 1.0 / self.cfg.fps_cap

    def _sleep(self, seconds: float) -> None:
        time.sleep(seconds)
        self.last_wait += seconds

    def __enter__(self) -> "FrameSource":
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def to_frame(image: np.ndarray) -> Frame:
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    elif image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    return Frame(image, time.time())
