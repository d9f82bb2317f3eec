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
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import cv2
import numpy as np

from agent.contracts.errors import FerError
from agent.contracts.preprocess import IMAGE_EXTENSIONS

log = logging.getLogger(__name__)

URL_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://")


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
    monotonic: float  # time.monotonic() at the same moment, for intervals


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


def _frame(image: np.ndarray) -> Frame:
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    elif image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    return Frame(image, time.time(), time.monotonic())


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
        frame = _frame(image)
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
            return _frame(image)
        return None


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
            stamp = (image, time.time(), time.monotonic())
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
        frame = _frame(item[0])
        frame.capture_time, frame.monotonic = item[1], item[2]
        return frame

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None
        self.ended = True


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
        return Frame(image, time.time(), time.monotonic())


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


def _hide_password(url: str) -> str:
    """rtsp://user:pass@host -> rtsp://user:***@host for logs."""
    scheme, sep, rest = url.partition("://")
    creds, at, host = rest.partition("@")
    if at and ":" in creds:
        return f"{scheme}{sep}{creds.split(':', 1)[0]}:***@{host}"
    return url
