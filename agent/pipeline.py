"""The frame loop: capture -> detect -> preprocess -> infer -> interpret -> publish.

:class:`Pipeline` takes each stage ready-made (so tests and benchmarks can
hand it in-memory sources and fake publishers) and runs frames through them in
that one direction. Side work (watchdog, health file, stats, preview) hangs on
the loop as :class:`Observer` objects instead of living inside it, and reads
the loop only through a :class:`LoopView`. :mod:`agent.runner` builds the
stages (the tracker too) and observers from the config and hands the loop a
frozen :class:`~agent.loop_settings.LoopSettings`; the loop never sees the config.

The hot path converts to grey once per frame (the detector and the
preprocessing share it), writes face tensors into one preallocated batch and
logs nothing per frame.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Protocol

import cv2
import numpy as np

from agent.capture import FrameSource
from agent.contracts.errors import InferenceError
from agent.contracts.events import Event, FaceState, PublishContext, StateSnapshot
from agent.contracts.manifest import Manifest, to_probabilities
from agent.contracts.preprocess import face_tensor
from agent.detectors import Detector
from agent.loop_settings import LoopSettings
from agent.timing import RateMeter, StageTimes
from agent.track import Track, Tracker

log = logging.getLogger(__name__)


class Classifier(Protocol):
    """What the pipeline needs from the infer stage (:class:`agent.classify.FaceClassifier`)."""

    name: str

    def infer(self, faces: np.ndarray) -> np.ndarray: ...
    def describe(self) -> str: ...
    def close(self) -> None: ...


class Publisher(Protocol):
    """What the pipeline needs from the publish stage (``agent.mqtt.publisher.MqttPublisher``)."""

    connected: bool
    outbox_depth: int
    ctx: PublishContext | None  # what every payload carries (None: a publisher that sends nothing)
    problems: list[str]  # what is degraded now (a full disk, refused messages), one short text each; [] when well

    def start(self) -> None: ...
    def publish_event(self, event: Event) -> None: ...
    def publish_state(self, snapshot: StateSnapshot) -> None: ...
    def publish_stats(self, stats: dict[str, Any]) -> None: ...
    def backend_changed(self, name: str, reason: str, detail: str | None = None) -> None:
        """A fallback took over inference: every later payload names backend ``name`` and why."""
    def publish_summary(self, summary: dict[str, Any]) -> None: ...
    def close(self) -> None: ...


class NullPublisher:
    """Publishes nothing (benchmarks); counts what it was given."""

    connected = True
    outbox_depth = 0

    def __init__(self, ctx: PublishContext | None = None) -> None:
        self.ctx = ctx
        self.problems: list[str] = []
        self.events: list[Event] = []
        self.states = 0
        self.stats: list[dict[str, Any]] = []
        self.summaries: list[dict[str, Any]] = []

    def start(self) -> None:
        pass

    def publish_event(self, event: Event) -> None:
        self.events.append(event)

    def publish_state(self, snapshot: StateSnapshot) -> None:
        self.states += 1

    def publish_stats(self, stats: dict[str, Any]) -> None:
        self.stats.append(stats)

    def backend_changed(self, name: str, reason: str, detail: str | None = None) -> None:
        if self.ctx is not None:
            self.ctx = self.ctx.with_backend(name, reason, detail)

    def publish_summary(self, summary: dict[str, Any]) -> None:
        self.summaries.append(summary)

    def close(self) -> None:
        pass


class _RateLimitedLog:
    """First occurrence at once, then at most one line per ``interval_s`` with the count since."""

    def __init__(self, interval_s: float = 10.0) -> None:
        self.interval_s = interval_s
        self._next = 0.0
        self._suppressed = 0

    def __call__(self, msg: str, *args: Any) -> None:
        now = time.monotonic()
        if now < self._next:
            self._suppressed += 1
            return
        extra = f" ({self._suppressed} more since the last message)" if self._suppressed else ""
        log.warning(msg + extra, *args)
        self._suppressed = 0
        self._next = now + self.interval_s


class LoopView:
    """What an observer may read of the loop: counters, timings, the rate, the classifier's name, the publisher.

    Read-only and narrow on purpose: an observer cannot reach the tracker,
    the stages or the loop's state, so it cannot change what the loop does.
    """

    def __init__(self, pipeline: Pipeline) -> None:
        self._p = pipeline

    @property
    def frames(self) -> int:
        return self._p.frames

    @property
    def faces_now(self) -> int:
        return self._p.faces_now

    @property
    def status(self) -> str:
        return self._p.status

    @property
    def last_frame_time(self) -> float:
        return self._p.last_frame_time

    @property
    def times(self) -> StageTimes:
        return self._p.times

    @property
    def fps(self) -> float:
        return self._p.rate.rate()

    @property
    def classifier_name(self) -> str:
        return self._p.classifier.name

    def classifier_detail(self) -> str:
        return self._p.classifier.describe()

    @property
    def publisher(self) -> Publisher:
        return self._p.publisher

    def source_trouble(self) -> str | None:
        """Why no frame comes now (a live source being retried), or None."""
        return self._p.source.trouble()

    @property
    def context(self) -> PublishContext | None:
        """The facts payloads carry now (backend included, after a fallback), from the publisher."""
        return self._p.publisher.ctx

    @property
    def model_name(self) -> str:
        return self._p.manifest.model_name

    @property
    def model_version(self) -> str:
        return self._p.manifest.model_version

    def detector_detail(self) -> str:
        return self._p.detector.describe()

    @property
    def frame_events(self) -> list[Event]:
        """The events of the latest frame (or of the shutdown)."""
        return self._p.frame_events

    @property
    def tracks(self) -> tuple[Track, ...]:
        """The faces being tracked, as the tracker holds them (read them; never change them)."""
        return tuple(self._p.tracker.tracks)

    def stats(self) -> dict[str, Any]:
        return self._p.stats()

    def visible_faces(self, capture_time: float) -> list[FaceState]:
        """The tracked faces a person should see at ``capture_time`` (the preview draws these)."""
        return self._p.tracker.visible(capture_time)


class Observer:
    """Side work on the frame loop; every hook is optional and must be cheap in ``on_frame``."""

    def on_start(self, pipeline: LoopView) -> None:
        pass

    def on_frame(self, pipeline: LoopView, image: np.ndarray, capture_time: float) -> None:
        pass

    def on_idle(self, pipeline: LoopView) -> None:
        """No frame this turn (a live source reconnecting)."""

    def on_stop(self, pipeline: LoopView) -> None:
        """After the final events and state, before the publisher closes."""


@dataclass
class RunSummary:
    frames: int
    dropped_frames: int
    failed_inferences: int
    events: int
    fps: float
    stages: dict[str, dict[str, float]]
    elapsed_s: float


class Pipeline:
    def __init__(
        self,
        settings: LoopSettings,
        manifest: Manifest,
        source: FrameSource,
        detector: Detector,
        classifier: Classifier,
        publisher: Publisher,
        tracker: Tracker,
        *,
        observers: list[Observer] | None = None,
    ) -> None:
        self.settings = settings
        self.manifest = manifest
        self.source = source
        self.detector = detector
        self.classifier = classifier
        self.publisher = publisher
        self.tracker = tracker
        self.observers = list(observers or [])
        self.view = LoopView(self)
        self.times = StageTimes()
        self.rate = RateMeter()
        self.frames = 0
        self.failed_inferences = 0
        self.events_published = 0
        self.frame_events: list[Event] = []  # the events of the latest frame (or of the shutdown), for observers
        self.faces_now = 0
        self.faces_total = 0  # detections over all frames (benchmarks report faces per frame)
        self.status = "starting"
        self.last_frame_time = 0.0
        self._stop = threading.Event()
        spec = manifest.input
        self._batch = np.zeros((settings.max_faces, spec.height, spec.width, spec.channels), dtype=np.float32)
        self._grey: np.ndarray | None = None
        self._no_faces = np.zeros((0, len(manifest.labels)), np.float32)
        self._log_failure = _RateLimitedLog()
        self._last_state = -1e18

    def stop(self) -> None:
        """Ask the loop to end after the current frame (safe from a signal handler)."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def runtime_switched(self, name: str, reason: str) -> None:
        """A fallback took over inference: every later payload names the runtime really in use."""
        self.status = f"running: {self.classifier.describe()}, {self.detector.describe()} detector, " \
                      f"{self.source.description}"
        self.publisher.backend_changed(name, f"fallback: {reason}", self.classifier.describe())

    def run(self) -> RunSummary:
        started = time.monotonic()
        self.publisher.start()
        self.status = f"running: {self.classifier.describe()}, {self.detector.describe()} detector, " \
                      f"{self.source.description}"
        for o in self.observers:
            o.on_start(self.view)
        log.info("%s", self.status)
        try:
            while not self._stop.is_set():
                if self.settings.max_frames and self.frames >= self.settings.max_frames:
                    break
                t0 = time.perf_counter()
                frame = self.source.read()
                if frame is None:
                    if self.source.ended:
                        log.info("source ended after %d frames", self.frames)
                        break
                    for o in self.observers:
                        o.on_idle(self.view)
                    continue
                waited = self.source.last_wait  # pacing or waiting for a live frame is not capture work
                self.times.add("capture", time.perf_counter() - t0 - waited)
                self.process(frame.image, frame.capture_time, t0 + waited)
        finally:
            self._shutdown()
        elapsed = time.monotonic() - started
        return RunSummary(self.frames, self.source.dropped, self.failed_inferences, self.events_published,
                          self.frames / elapsed if elapsed > 0 else 0.0, self.times.summary(), elapsed)

    def process(self, image: np.ndarray, capture_time: float, t_start: float | None = None) -> list[Event]:
        """Run one frame through detect..publish; returns the events it produced."""
        perf = time.perf_counter
        t0 = perf()
        t_start = t0 if t_start is None else t_start
        self.frames += 1
        n_frame = self.frames
        h, w = image.shape[:2]
        if self._grey is None or self._grey.shape != (h, w):
            self._grey = np.empty((h, w), dtype=np.uint8)
        grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY, dst=self._grey)
        detections = self.detector.detect(image, grey)
        t1 = perf()
        self.times.add("detect", t1 - t0)

        n = len(detections)
        self.faces_total += n
        spec, margin = self.manifest.input, self.settings.margin
        for i, det in enumerate(detections):
            face_tensor(image, det.box, spec, margin, out=self._batch[i], grey_frame=grey)
        t2 = perf()
        self.times.add("preprocess", t2 - t1)

        events: list[Event] = []
        failed = False
        if n:
            try:
                scores = self.classifier.infer(self._batch[:n])
            except InferenceError as exc:
                failed = True
                self.failed_inferences += 1
                self._log_failure("frame %d: inference failed, frame skipped: %s", n_frame, exc)
        t3 = perf()
        if n:
            self.times.add("infer", t3 - t2)

        if not failed:  # a failed frame must not make faces 'leave'
            probs = to_probabilities(scores, self.manifest.output.kind) if n else self._no_faces
            events = self.tracker.update([d.box for d in detections], probs, w, h, n_frame, capture_time)
            self.faces_now = n
        t4 = perf()
        self.times.add("interpret", t4 - t3)

        for event in events:
            self.publisher.publish_event(event)
        self.events_published += len(events)
        self.frame_events = events
        now = time.monotonic()
        if events or now - self._last_state >= self.settings.state_interval_s:
            self.publisher.publish_state(self.tracker.snapshot(n_frame, capture_time))
            self._last_state = now
        self.last_frame_time = capture_time
        self.times.add("publish", perf() - t4)
        self.rate.tick(now)
        for o in self.observers:
            o.on_frame(self.view, image, capture_time)
        self.times.add("total", perf() - t_start)
        return events

    def stats(self) -> dict[str, Any]:
        """The stats message body (the publisher adds backend, model, uptime, version, outbox)."""
        return {
            "fps": round(self.rate.rate(), 2),
            "frames": self.frames,
            "dropped_frames": self.source.dropped,
            "source_reopens": self.source.reopens,
            "failed_inferences": self.failed_inferences,
            "faces": self.faces_now,
            "stages": self.times.summary(),
        }

    def _shutdown(self) -> None:
        with _log_errors("final events"):
            now = self.last_frame_time or time.time()  # media time for files, like the events before
            self.frame_events = self.tracker.clear(self.frames, now)
            for event in self.frame_events:
                self.publisher.publish_event(event)
                self.events_published += 1
            self.publisher.publish_state(self.tracker.snapshot(self.frames, now))
        for o in self.observers:
            with _log_errors(f"stopping {type(o).__name__}"):
                o.on_stop(self.view)
        for what, close in (("the publisher", self.publisher.close), ("the source", self.source.close),
                            ("the classifier", self.classifier.close), ("the detector", self.detector.close)):
            with _log_errors(f"closing {what}"):
                close()


@contextlib.contextmanager
def _log_errors(what: str):
    try:
        yield
    except Exception:  # shutdown must go on: the rest still needs closing
        log.exception("error while %s", what)
