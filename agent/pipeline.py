"""The run loop: capture -> detect -> preprocess -> infer -> interpret -> publish.

:class:`Pipeline` takes each stage ready-made (so tests and benchmarks can
hand it in-memory sources and fake publishers) and runs frames through them
in that one direction. :func:`run_agent` builds the stages from the config,
starts the embedded broker when no broker is configured, wires systemd
notification and the health file, and handles SIGINT/SIGTERM: finish the
current frame, publish the faces leaving and the final state, disconnect, 0.

The hot path converts to grey once per frame (the detector and the
preprocessing share it), writes face tensors into one preallocated batch and
logs nothing per frame.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from dataclasses import dataclass, replace
from typing import Any, Protocol

import cv2
import numpy as np

from agent import __version__
from agent.backends import Backend, BackendError, create_backend
from agent.capture import FrameSource, open_source
from agent.config import AgentConfig
from agent.detect import Detector, create_detector
from agent.contracts.events import Event, PublishContext, StateSnapshot
from agent.contracts.manifest import Manifest, load_manifest
from agent.contracts.preprocess import face_tensor
from agent.preview import PreviewWriter
from agent.timing import RateMeter, StageTimes
from agent.track import Tracker, to_probabilities

log = logging.getLogger(__name__)


class Publisher(Protocol):
    """What the pipeline needs from the publish stage (``agent.mqtt.publisher.MqttPublisher``)."""

    connected: bool
    outbox_depth: int

    def start(self) -> None: ...
    def publish_event(self, event: Event) -> None: ...
    def publish_state(self, snapshot: StateSnapshot) -> None: ...
    def publish_stats(self, stats: dict[str, Any]) -> None: ...
    def close(self) -> None: ...


class NullPublisher:
    """Publishes nothing (benchmarks); counts what it was given."""

    connected = True
    outbox_depth = 0

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.states = 0
        self.stats: list[dict[str, Any]] = []

    def start(self) -> None:
        pass

    def publish_event(self, event: Event) -> None:
        self.events.append(event)

    def publish_state(self, snapshot: StateSnapshot) -> None:
        self.states += 1

    def publish_stats(self, stats: dict[str, Any]) -> None:
        self.stats.append(stats)

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
        cfg: AgentConfig,
        manifest: Manifest,
        source: FrameSource,
        detector: Detector,
        backend: Backend,
        publisher: Publisher,
        *,
        notifier: Any = None,
        health: Any = None,
        preview: PreviewWriter | None = None,
    ) -> None:
        self.cfg = cfg
        self.manifest = manifest
        self.source = source
        self.detector = detector
        self.backend = backend
        self.publisher = publisher
        self.notifier = notifier
        self.health = health
        self.preview = preview
        self.tracker = Tracker(cfg.tracking, manifest.labels)
        self.times = StageTimes()
        self.rate = RateMeter()
        self.frames = 0
        self.failed_inferences = 0
        self.events_published = 0
        self.faces_now = 0
        self.faces_total = 0  # detections over all frames (benchmarks report faces per frame)
        self.status = "starting"
        self._stop = threading.Event()
        spec = manifest.input
        self._batch = np.zeros((cfg.detector.max_faces, spec.height, spec.width, spec.channels), dtype=np.float32)
        self._grey: np.ndarray | None = None
        self._no_faces = np.zeros((0, len(manifest.labels)), np.float32)
        self._log_failure = _RateLimitedLog()
        self._last_state = -1e18
        self._last_stats = time.monotonic()
        self._last_frame_time = 0.0

    def stop(self) -> None:
        """Ask the loop to end after the current frame (safe from a signal handler)."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def run(self) -> RunSummary:
        started = time.monotonic()
        self.publisher.start()
        self.status = f"running: {self.backend.describe()}, {self.detector.name} detector, {self.source.description}"
        if self.notifier is not None:
            self.notifier.ready(self.status)
        log.info("%s", self.status)
        try:
            while not self._stop.is_set():
                if self.cfg.max_frames and self.frames >= self.cfg.max_frames:
                    break
                t0 = time.perf_counter()
                frame = self.source.read()
                if frame is None:
                    if self.source.ended:
                        log.info("source ended after %d frames", self.frames)
                        break
                    self._idle()
                    continue
                waited = self.source.last_wait  # pacing or waiting for a live frame is not capture work
                self.times.add("capture", time.perf_counter() - t0 - waited)
                self.process(frame.image, frame.capture_time, t0 + waited)
        finally:
            self._shutdown()
        elapsed = time.monotonic() - started
        return RunSummary(
            self.frames,
            self.source.dropped,
            self.failed_inferences,
            self.events_published,
            self.frames / elapsed if elapsed > 0 else 0.0,
            self.times.summary(),
            elapsed,
        )

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
        spec, margin = self.manifest.input, self.cfg.detector.margin
        for i, det in enumerate(detections):
            face_tensor(image, det.box, spec, margin, out=self._batch[i], grey_frame=grey)
        t2 = perf()
        self.times.add("preprocess", t2 - t1)

        events: list[Event] = []
        failed = False
        if n:
            try:
                scores = self.backend.infer(self._batch[:n])
            except BackendError as exc:
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

        now = time.monotonic()
        for event in events:
            self.publisher.publish_event(event)
        self.events_published += len(events)
        if events or now - self._last_state >= self.cfg.publish.state_interval_s:
            self.publisher.publish_state(self.tracker.snapshot(n_frame, capture_time))
            self._last_state = now
        self._last_frame_time = capture_time
        if self.notifier is not None:
            self.notifier.watchdog()
        if self.health is not None:
            self.health.update(
                capture_time,
                self.frames,
                self.publisher.connected,
                self.publisher.outbox_depth,
                self.backend.name,
                self.status,
            )
        if now - self._last_stats >= self.cfg.publish.stats_interval_s:
            self._publish_stats()
            self._last_stats = now
        t5 = perf()
        self.times.add("publish", t5 - t4)
        if self.preview is not None:
            self.preview.write(image, self.tracker.visible(capture_time), n_frame, footer=self._footer())
        self.rate.tick(now)
        self.times.add("total", perf() - t_start)
        return events

    def _idle(self) -> None:
        """No frame (live source reconnecting): keep the health file honest, no watchdog ping."""
        if self.health is not None:
            self.health.update(
                self._last_frame_time,
                self.frames,
                self.publisher.connected,
                self.publisher.outbox_depth,
                self.backend.name,
                "waiting for frames",
            )

    def _footer(self) -> str:
        stages = self.times.summary()
        total = stages.get("total", {}).get("mean_ms", 0.0)
        return f"frame {self.frames}  {self.rate.rate():.1f} fps  {total:.1f} ms/frame  {self.backend.name}"

    def stats(self) -> dict[str, Any]:
        """The stats message body (the publisher adds backend, model, uptime, version, outbox)."""
        return {
            "fps": round(self.rate.rate(), 2),
            "frames": self.frames,
            "dropped_frames": self.source.dropped,
            "failed_inferences": self.failed_inferences,
            "faces": self.faces_now,
            "stages": self.times.summary(),
        }

    def _publish_stats(self) -> None:
        stats = self.stats()
        self.publisher.publish_stats(stats)
        log.info(
            "stats: %.1f fps, %d frames, %d dropped, %d failed, %d face(s); %s",
            stats["fps"],
            stats["frames"],
            stats["dropped_frames"],
            stats["failed_inferences"],
            stats["faces"],
            self.times.format(),
        )
        if self.notifier is not None:
            self.notifier.status(f"{stats['fps']:.1f} fps, {stats['faces']} face(s), {self.backend.describe()}")

    def _shutdown(self) -> None:
        if self.notifier is not None:
            self.notifier.stopping("stopping")
        with _log_errors("final events"):
            now = self._last_frame_time or time.time()  # media time for files, like the events before
            for event in self.tracker.clear(self.frames, now):
                self.publisher.publish_event(event)
                self.events_published += 1
            self.publisher.publish_state(self.tracker.snapshot(self.frames, now))
            if self.frames:
                self._publish_stats()
        with _log_errors("closing the publisher"):
            self.publisher.close()
        with _log_errors("closing the source"):
            self.source.close()
        if self.preview is not None:
            with _log_errors("closing the preview"):
                self.preview.close()
        with _log_errors("closing the backend"):
            self.backend.close()
        if self.health is not None:
            with _log_errors("removing the health file"):
                self.health.close()


@contextlib.contextmanager
def _log_errors(what: str):
    try:
        yield
    except Exception:  # shutdown must go on: the rest still needs closing
        log.exception("error while %s", what)


def publish_context(cfg: AgentConfig, manifest: Manifest, backend: Backend) -> PublishContext:
    extra = {"backend_detail": backend.describe()}
    reason = getattr(backend, "selection_reason", None)
    if reason:
        extra["backend_reason"] = reason
    return PublishContext(
        device_id=cfg.mqtt.resolved_device_id(),
        model_name=manifest.model_name,
        model_version=manifest.model_version,
        backend=backend.name,
        agent_version=__version__,
        extra=extra,
    )


def create_publisher(cfg: AgentConfig, ctx: PublishContext) -> Publisher:
    from agent.mqtt.publisher import MqttPublisher
    from agent.service import resolve_state_dir

    return MqttPublisher(cfg.mqtt, ctx, resolve_state_dir(cfg.service))


@contextlib.contextmanager
def _signals_stop(pipeline: Pipeline):
    """SIGINT/SIGTERM end the loop after the current frame (only possible on the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, _frame: Any) -> None:
        if pipeline.stopping:  # second signal: the person means it
            raise KeyboardInterrupt
        log.info("%s received: finishing the current frame", signal.Signals(signum).name)
        pipeline.stop()

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def run_agent(cfg: AgentConfig, publisher_factory=create_publisher) -> RunSummary:
    """Build every stage from ``cfg`` and run until the source ends, max_frames, or a signal."""
    from agent.service import HealthReporter, Notifier, resolve_health_file

    cv2.setNumThreads(1)  # one core per frame; threads only add contention at this size
    manifest = load_manifest(cfg.bundle_path(), verify=cfg.model.verify)
    log.info("model bundle: %s %s (%s)", manifest.model_name, manifest.model_version, manifest.root)
    with contextlib.ExitStack() as stack:
        # Cheapest and most likely to be misconfigured first: the error comes before anything starts.
        detector = create_detector(cfg.detector, manifest, cfg.backend.tflite)
        backend = create_backend(cfg.backend, manifest)
        source = open_source(cfg.source)
        stack.callback(source.close)  # if a later stage fails to start; closing twice is harmless
        if not cfg.mqtt.host:
            from agent.mqtt.broker import EmbeddedBroker

            host, port = stack.enter_context(EmbeddedBroker())
            log.info("no mqtt.host configured: embedded broker on %s:%d (emulation)", host, port)
            cfg = replace(cfg, mqtt=replace(cfg.mqtt, host=host, port=port))
        publisher = publisher_factory(cfg, publish_context(cfg, manifest, backend))
        notifier = Notifier()
        health = HealthReporter(
            resolve_health_file(cfg.service),
            interval_s=cfg.service.health_interval_s,
            broker_grace_s=cfg.service.broker_grace_s,
        )
        preview = None
        if cfg.preview.path:
            fps = cfg.source.fps_cap or source.nominal_fps or 15.0
            preview = PreviewWriter(cfg.preview.path, manifest.labels, fps=fps, every_n=cfg.preview.every_n)
        pipeline = Pipeline(
            cfg, manifest, source, detector, backend, publisher, notifier=notifier, health=health, preview=preview
        )
        with _signals_stop(pipeline):
            summary = pipeline.run()
        log.info(
            "stopped: %d frames in %.1f s (%.1f fps), %d dropped, %d failed inferences, %d events",
            summary.frames,
            summary.elapsed_s,
            summary.fps,
            summary.dropped_frames,
            summary.failed_inferences,
            summary.events,
        )
        return summary
