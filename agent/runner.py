"""``fer-agent run``: build every stage and observer from the config, run, stop cleanly.

Starts the embedded broker when no broker is configured, wires systemd
notification and the health file, and handles SIGINT/SIGTERM: finish the
current frame, publish the faces leaving and the final state, disconnect, 0.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from dataclasses import replace
from typing import Any

import cv2

from agent import __version__
from agent.capture import FrameSource, open_source
from agent.classify import FaceClassifier
from agent.config import AgentConfig
from agent.contracts.events import PublishContext
from agent.contracts.manifest import Manifest, load_manifest
from agent.detectors import Detector, create_detector
from agent.health import HealthReporter
from agent.loop_settings import LoopSettings
from agent.metrics import MetricsObserver
from agent.notify import Notifier
from agent.observers import HealthObserver, PreviewObserver, StatsObserver, WatchdogObserver
from agent.pipeline import Classifier, Observer, Pipeline, Publisher, RunSummary
from agent.preview import PreviewWriter
from agent.runtimes import create_runtime
from agent.service import resolve_health_file, resolve_state_dir
from agent.summary import SummaryObserver
from agent.track import Tracker

log = logging.getLogger(__name__)


def publish_context(cfg: AgentConfig, manifest: Manifest, classifier: FaceClassifier, reason: str = ""
                    ) -> PublishContext:
    extra = {"backend_detail": classifier.describe()}
    if reason:
        extra["backend_reason"] = reason
    return PublishContext(
        device_id=cfg.mqtt.resolved_device_id(),
        model_name=manifest.model_name,
        model_version=manifest.model_version,
        backend=classifier.name,
        agent_version=__version__,
        extra=extra,
    )


def loop_settings(cfg: AgentConfig) -> LoopSettings:
    """The few config values the frame loop reads itself."""
    return LoopSettings(max_faces=cfg.detector.max_faces, margin=cfg.detector.margin,
                        state_interval_s=cfg.publish.state_interval_s, max_frames=cfg.max_frames)


def build_pipeline(cfg: AgentConfig, manifest: Manifest, source: FrameSource, detector: Detector,
                   classifier: Classifier, publisher: Publisher, observers: list[Observer] | None = None) -> Pipeline:
    """The loop over ready-made stages: its settings and tracker come from ``cfg`` (also for benchmarks and tests)."""
    return Pipeline(loop_settings(cfg), manifest, source, detector, classifier, publisher,
                    Tracker(cfg.tracking, manifest.labels), observers=observers)


def create_publisher(cfg: AgentConfig, ctx: PublishContext) -> Publisher:
    from agent.mqtt.publisher import MqttPublisher

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
    cv2.setNumThreads(1)  # one core per frame; threads only add contention at this size
    metrics = MetricsObserver(cfg.metrics.textfile, cfg.publish.stats_interval_s) if cfg.metrics.textfile else None
    manifest = load_manifest(cfg.bundle_path(), verify=cfg.model.verify)
    log.info("model bundle: %s %s (%s)", manifest.model_name, manifest.model_version, manifest.root)
    switched: list[Pipeline] = []  # the pipeline, once built: a fallback tells it which runtime took over
    with contextlib.ExitStack() as stack:
        # Cheapest and most likely to be misconfigured first: the error comes before anything starts.
        state_dir = resolve_state_dir(cfg.service)
        detector = create_detector(cfg.detector, manifest, cfg.backend, state_dir)
        stack.callback(detector.close)
        started = create_runtime(cfg.backend, FaceClassifier.model(manifest), state_dir=state_dir,
                                 on_switch=lambda name, why: [p.runtime_switched(name, why) for p in switched])
        classifier = FaceClassifier(manifest, started.runtime)
        stack.callback(classifier.close)
        source = open_source(cfg.source)
        stack.callback(source.close)  # if a later stage fails to start; closing twice is harmless
        if not cfg.mqtt.host:
            from agent.mqtt.broker import EmbeddedBroker

            host, port = stack.enter_context(EmbeddedBroker())
            log.info("no mqtt.host configured: embedded broker on %s:%d (emulation)", host, port)
            cfg = replace(cfg, mqtt=replace(cfg.mqtt, host=host, port=port))
        ctx = publish_context(cfg, manifest, classifier, started.explanation)
        publisher = publisher_factory(cfg, ctx)
        observers = [
            WatchdogObserver(Notifier(), cfg.publish.stats_interval_s),
            HealthObserver(HealthReporter(resolve_health_file(cfg.service), interval_s=cfg.service.health_interval_s,
                                          broker_grace_s=cfg.service.broker_grace_s)),
            StatsObserver(cfg.publish.stats_interval_s),
            SummaryObserver(manifest.labels, cfg.publish.summary_window_s, cfg.publish.summary_interval_s),
        ]
        if metrics is not None:
            observers.append(metrics)
        if cfg.preview.path:
            fps = cfg.source.fps_cap or source.nominal_fps or 15.0
            writer = PreviewWriter(cfg.preview.path, manifest.labels, fps=fps, every_n=cfg.preview.every_n)
            observers.append(PreviewObserver(writer))
        pipeline = build_pipeline(cfg, manifest, source, detector, classifier, publisher, observers)
        switched.append(pipeline)
        with _signals_stop(pipeline):
            summary = pipeline.run()
        log.info("stopped: %d frames in %.1f s (%.1f fps), %d dropped, %d failed inferences, %d events",
                 summary.frames, summary.elapsed_s, summary.fps, summary.dropped_frames,
                 summary.failed_inferences, summary.events)
        return summary
