"""Live sources (cameras, streams, GStreamer): read in a thread, newest frame wins, reopened on failure.

While it cannot deliver, :meth:`LiveSource.trouble` says since when and how many
attempts were made, for systemd's STATUS and the health file (the watchdog keeps
being fed by the loop meanwhile; see :class:`agent.observers.WatchdogObserver`).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

import cv2
import numpy as np

from agent.frames import Frame, FrameSource, SourceConfig, to_frame

log = logging.getLogger("agent.capture")


class LiveSource(FrameSource):
    """Camera, stream or pipeline read in a background thread; newest frame wins; reopens on failure."""

    live = True

    def __init__(
        self, cfg: SourceConfig, description: str, opener: Callable[[], cv2.VideoCapture], paced: bool = False
    ) -> None:
        super().__init__(cfg, description)
        self._opener = opener
        self._paced = paced  # a file read as live: deliver at its own frame rate, as a camera would
        self._cond = threading.Condition()
        self._latest: tuple[np.ndarray, float, float] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.frames_read = 0
        self.connected = False
        self.down_since: float | None = None  # wall time the source stopped delivering; None while it delivers
        self.attempts = 0  # failed open attempts since then

    def trouble(self) -> str | None:
        since = self.down_since
        if since is None:
            return None
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(since))
        return f"source unreachable since {stamp}, retrying (attempt {self.attempts + 1}): {self.description}"

    def open(self) -> None:
        cap = self._try_open()
        if cap is None:
            self.down_since, self.attempts = time.time(), 1
            log.warning("%s: cannot open yet; retrying in the background", self.description)
        self._thread = threading.Thread(target=self._run, args=(cap,), name="capture", daemon=True)
        self._thread.start()

    def _try_open(self) -> cv2.VideoCapture | None:
        try:
            cap = self._opener()
        except cv2.error as exc:
            log.warning("%s: open failed: %s", self.description, exc)
            return None
        if not cap.isOpened():
            cap.release()
            return None
        if self.cfg.width:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.cfg.width)
        if self.cfg.height:
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.cfg.height)
        self.connected = True
        self.nominal_fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        return cap

    def _run(self, cap: cv2.VideoCapture | None) -> None:
        backoff = self.cfg.reopen_initial_s
        while not self._stop.is_set():
            if cap is None:
                if self._stop.wait(backoff):
                    break
                backoff = min(max(backoff * 2, 0.05), self.cfg.reopen_max_s)
                cap = self._try_open()
                if cap is None:
                    self.attempts += 1
                    log.warning("%s: reopen failed; next try in %.1f s", self.description, backoff)
                    continue
                self.reopens += 1
                log.info("%s: reopened", self.description)
            ok, image = cap.read()
            if not ok:
                log.warning("%s: no frame (source dropped); reopening", self.description)
                cap.release()
                cap = None
                self.connected = False
                if self.down_since is None:
                    self.down_since, self.attempts = time.time(), 0
                continue
            self.down_since = None
            backoff = self.cfg.reopen_initial_s
            if self._paced and self.nominal_fps > 0 and self._stop.wait(1.0 / self.nominal_fps):
                break
            stamp = (image, time.time())
            with self._cond:
                if self._latest is not None:
                    self.dropped += 1
                self._latest = stamp
                self.frames_read += 1
                self._cond.notify()
        if cap is not None:
            cap.release()
        self.connected = False

    def read(self, timeout: float = 1.0) -> Frame | None:
        self.last_wait = 0.0
        self._pace()
        with self._cond:
            if self._latest is None:
                t0 = time.monotonic()
                self._cond.wait(timeout)
                self.last_wait += time.monotonic() - t0
            item, self._latest = self._latest, None
        if item is None:
            return None
        frame = to_frame(item[0])
        frame.capture_time = item[1]  # when the camera delivered it, not when the loop took it
        return frame

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None
        self.ended = True


def _hide_password(url: str) -> str:
    """rtsp://user:pass@host -> rtsp://user:***@host for logs."""
    scheme, sep, rest = url.partition("://")
    creds, at, host = rest.partition("@")
    if at and ":" in creds:
        return f"{scheme}{sep}{creds.split(':', 1)[0]}:***@{host}"
    return url
