"""Capture stage: cameras, files, image folders, network streams, GStreamer.

Every source hands out :class:`Frame` objects (BGR uint8) from ``read()``,
which returns ``None`` when there is nothing (yet): ``source.ended`` then says
whether it is over for good (end of file) or just waiting (a live source
reconnecting).

Live sources (cameras, URLs, GStreamer; or ``source.live: true``) are read in
a thread that keeps only the newest frame, so a slow pipeline analyses fresh
frames instead of a growing backlog; every frame replaced before it was
taken counts as dropped. When a live source fails it is reopened with
exponential backoff. Files are read frame by frame (every frame, or at the
file's own rate with ``realtime: true``, skipping frames when behind).
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Callable

import cv2

from agent.contracts.errors import FerError
from agent.contracts.preprocess import IMAGE_EXTENSIONS
from agent.frames import Frame, FrameSource, SourceConfig, to_frame
from agent.live_source import LiveSource, _hide_password

__all__ = ["ArraySource", "Frame", "FrameSource", "ImageSource", "LiveSource", "SourceConfig", "VideoFileSource",
           "_hide_password", "has_gstreamer", "open_source", "source_kind"]

log = logging.getLogger(__name__)

URL_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://")


def source_kind(uri: str) -> str:
    """camera | gstreamer | url | directory | image | video."""
    text = uri.strip()
    if text.isdigit() or text.startswith("/dev/video"):
        return "camera"
    if "!" in text:
        return "gstreamer"
    if text.lower().startswith(URL_SCHEMES):
        return "url"
    path = Path(text).expanduser()
    if path.is_dir():
        return "directory"
    if path.suffix.lower() in IMAGE_EXTENSIONS:
        return "image"
    return "video"


def has_gstreamer() -> bool:
    for line in cv2.getBuildInformation().splitlines():
        if line.strip().startswith("GStreamer:"):
            return "YES" in line
    return False


class VideoFileSource(FrameSource):
    """A video file read in order; ends (or loops) at the end of the file."""

    def __init__(self, cfg: SourceConfig, path: str, opener: Callable[[], cv2.VideoCapture] | None = None) -> None:
        super().__init__(cfg, f"video file {path}")
        self.path = path
        self._opener = opener or (lambda: cv2.VideoCapture(path))
        self._cap: cv2.VideoCapture | None = None
        self._t0 = 0.0
        self._wall0 = 0.0
        self._pos = 0
        self._warned_short = False

    def open(self) -> None:
        if not Path(self.path).exists():
            raise FerError(f"source.uri: {self.path}: no such file")
        self._cap = self._opener()
        if not self._cap.isOpened():
            raise FerError(f"source.uri: {self.path}: OpenCV cannot open this file as video")
        self.nominal_fps = float(self._cap.get(cv2.CAP_PROP_FPS) or 0.0)
        self._t0 = time.monotonic()
        self._wall0 = time.time()
        self._pos = 0

    def read(self) -> Frame | None:
        self.last_wait = 0.0
        if self._cap is None or self.ended:
            return None
        if self.cfg.realtime and self.nominal_fps > 0:
            # Skip (grab without decoding) the frames whose time has already passed.
            due = int((time.monotonic() - self._t0) * self.nominal_fps)
            while self._pos < due and self._cap.grab():
                self._pos += 1
                self.dropped += 1
        ok, image = self._cap.read()
        if not ok:
            self._check_early_end()
            if self.cfg.loop and self._pos > 0:
                self._cap.release()
                self.open()
                ok, image = self._cap.read()
            if not ok:
                self.ended = True
                return None
        self._pos += 1
        if self.cfg.realtime and self.nominal_fps > 0:
            # Hand the frame over at its own media time (index pos-1), as a camera would.
            wait = self._t0 + (self._pos - 1) / self.nominal_fps - time.monotonic()
            if wait > 0:
                self._sleep(wait)
        self._pace()
        frame = to_frame(image)
        if self.nominal_fps > 0:
            # Media time, not read time: smoothing, hysteresis and 'left' then mean the same
            # whether the file is analysed at 10 or 500 frames/s.
            frame.capture_time = self._wall0 + (self._pos - 1) / self.nominal_fps
        return frame

    def _check_early_end(self) -> None:
        """A read that fails before the frame count the file declares is damage, not the end: say so (once)."""
        expected = int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0) if self._cap is not None else 0
        if self._warned_short or expected <= 0 or self._pos + 1 >= expected:  # counts may be one frame off
            return
        self._warned_short = True
        then = (f"loop: true replays only these {self._pos} frames" if self.cfg.loop and self._pos
                else "stopping here")
        log.warning("%s: cannot read frame %d of %d (the file is damaged or truncated); %s",
                    self.path, self._pos + 1, expected, then)

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


class ImageSource(FrameSource):
    """One image file or a directory of them (sorted by name); unreadable files are skipped with a warning."""

    def __init__(self, cfg: SourceConfig, path: str) -> None:
        super().__init__(cfg, f"images {path}")
        self.path = Path(path).expanduser()
        self._files: list[Path] = []
        self._i = 0

    def open(self) -> None:
        if self.path.is_dir():
            self._files = sorted(p for p in self.path.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
            if not self._files:
                raise FerError(
                    f"source.uri: {self.path}: directory has no images ({', '.join(sorted(IMAGE_EXTENSIONS))})"
                )
        elif self.path.is_file():
            self._files = [self.path]
        else:
            raise FerError(f"source.uri: {self.path}: no such file or directory")
        self._i = 0

    def read(self) -> Frame | None:
        self.last_wait = 0.0
        while not self.ended:
            if self._i >= len(self._files):
                if not self.cfg.loop:
                    self.ended = True
                    return None
                self._i = 0
            path = self._files[self._i]
            self._i += 1
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if image is None:
                log.warning("%s: not a readable image, skipped", path)
                if len(self._files) == 1:
                    raise FerError(f"source.uri: {path}: not a readable image")
                continue
            self._pace()
            return to_frame(image)
        return None


class ArraySource(FrameSource):
    """Frames from memory (benchmarks, tests, the demo): an iterable of BGR images."""

    def __init__(self, cfg: SourceConfig, frames, description: str = "generated frames") -> None:
        super().__init__(cfg, description)
        self._it = iter(frames)

    def read(self) -> Frame | None:
        self.last_wait = 0.0
        if self.ended:
            return None
        try:
            image = next(self._it)
        except StopIteration:
            self.ended = True
            return None
        self._pace()
        return Frame(image, time.time())


def open_source(cfg: SourceConfig) -> FrameSource:
    """Build and open the source ``cfg.uri`` describes; raises :class:`FerError` for a bad one."""
    uri = cfg.uri.strip()
    kind = source_kind(uri)
    if kind == "camera":
        device: int | str = int(uri) if uri.isdigit() else uri
        backend = cv2.CAP_V4L2 if sys.platform.startswith("linux") else cv2.CAP_ANY
        if isinstance(device, str) and not Path(device).exists():
            raise FerError(f"source.uri: {device}: no such camera device")
        source: FrameSource = LiveSource(cfg, f"camera {uri}", lambda: cv2.VideoCapture(device, backend))
    elif kind == "gstreamer":
        if not has_gstreamer():
            raise FerError(
                "source.uri: a GStreamer pipeline needs OpenCV built with GStreamer "
                "(opencv-python-headless from PyPI is not; use the board's python3-opencv)"
            )
        source = LiveSource(cfg, "GStreamer pipeline", lambda: cv2.VideoCapture(uri, cv2.CAP_GSTREAMER))
    elif kind == "url":
        source = LiveSource(cfg, f"stream {_hide_password(uri)}", lambda: cv2.VideoCapture(uri, cv2.CAP_FFMPEG))
    elif kind in ("image", "directory"):
        source = ImageSource(cfg, uri)
    else:
        path = str(Path(uri).expanduser())
        if cfg.live:
            if not Path(path).exists():
                raise FerError(f"source.uri: {path}: no such file")
            source = LiveSource(cfg, f"video file {path} (as live)", lambda: cv2.VideoCapture(path), paced=True)
        else:
            source = VideoFileSource(cfg, path)
    if cfg.live is False and isinstance(source, LiveSource):
        log.info("source.live is false but %s can only be read live", source.description)
    source.open()
    return source
