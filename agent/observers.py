"""Side work on the frame loop: systemd watchdog, health file, stats, preview.

Each is a :class:`~agent.pipeline.Observer`: the loop calls its hooks and
knows nothing else about it, so none of this can slow or break a frame
beyond a time comparison when nothing is due. Hooks get a read-only
:class:`~agent.pipeline.LoopView`, never the loop itself.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from agent.health import HealthReporter
from agent.notify import Notifier
from agent.pipeline import LoopView, Observer
from agent.preview import PreviewWriter

log = logging.getLogger(__name__)


class StatsObserver(Observer):
    """Publishes and logs the stage timings every ``interval_s`` and once at the end."""

    def __init__(self, interval_s: float, clock=time.monotonic) -> None:
        self.interval_s = interval_s
        self._clock = clock
        self._last = clock()
        self.published = 0

    def on_frame(self, pipeline: LoopView, image: np.ndarray, capture_time: float) -> None:
        now = self._clock()
        if now - self._last >= self.interval_s:
            self._last = now
            self.publish(pipeline)

    def on_stop(self, pipeline: LoopView) -> None:
        if pipeline.frames:
            self.publish(pipeline)

    def publish(self, pipeline: LoopView) -> None:
        stats = pipeline.stats()
        pipeline.publisher.publish_stats(stats)
        self.published += 1
        log.info("stats: %.1f fps, %d frames, %d dropped, %d failed, %d face(s); %s", stats["fps"], stats["frames"],
                 stats["dropped_frames"], stats["failed_inferences"], stats["faces"], pipeline.times.format())


class WatchdogObserver(Observer):
    """sd_notify: READY when the loop starts, WATCHDOG per turn of the loop (rate-limited), STATUS, STOPPING.

    The watchdog says the *loop* is alive, not the camera: a turn without a frame (a live source being
    reopened) pings too, so a camera that is down for minutes does not get the unit killed and, after
    ``StartLimitBurst`` restarts, left failed. STATUS then says why no frames come. A loop that hangs (in
    a stage, in a read that never returns) stops pinging and systemd kills it as before.
    """

    def __init__(self, notifier: Notifier, status_interval_s: float = 30.0, clock=time.monotonic) -> None:
        self.notifier = notifier
        self.status_interval_s = status_interval_s
        self._clock = clock
        self._last_status = clock()
        self._trouble: str | None = None  # the STATUS last sent for a source that delivers nothing

    def on_start(self, pipeline: LoopView) -> None:
        self.notifier.ready(pipeline.status)

    def on_idle(self, pipeline: LoopView) -> None:
        self.notifier.watchdog()
        trouble = pipeline.source_trouble() or "waiting for frames"
        if trouble != self._trouble:
            self._trouble = trouble
            self.notifier.status(trouble)

    def on_frame(self, pipeline: LoopView, image: np.ndarray, capture_time: float) -> None:
        self.notifier.watchdog()
        now = self._clock()
        if self._trouble is not None or now - self._last_status >= self.status_interval_s:
            self._trouble = None
            self._last_status = now
            self.notifier.status(f"{pipeline.fps:.1f} fps, {pipeline.faces_now} face(s), "
                                 f"{pipeline.classifier_detail()}")

    def on_stop(self, pipeline: LoopView) -> None:
        self.notifier.stopping("stopping")


class HealthObserver(Observer):
    """Keeps the health file ``fer-agent health`` reads; removed at a clean stop.

    The file's last frame time is when the frame was processed, by the wall clock, not the frame's
    capture time: a file played faster or slower than its own rate (``realtime: false``) stamps its
    frames on the clip's timeline, which may run far behind the clock while frames are processed.
    """

    def __init__(self, reporter: HealthReporter) -> None:
        self.reporter = reporter
        self._last_processed = 0.0

    def _update(self, pipeline: LoopView, status: str) -> None:
        pub = pipeline.publisher
        self.reporter.update(self._last_processed, pipeline.frames, pub.connected, pub.outbox_depth,
                             pipeline.classifier_name, status, list(pub.problems))

    def on_frame(self, pipeline: LoopView, image: np.ndarray, capture_time: float) -> None:
        self._last_processed = time.time()
        self._update(pipeline, pipeline.status)

    def on_idle(self, pipeline: LoopView) -> None:
        self._update(pipeline, pipeline.source_trouble() or "waiting for frames")  # keeps the file honest

    def on_stop(self, pipeline: LoopView) -> None:
        self.reporter.close()


class PreviewObserver(Observer):
    """Annotated frames for a person (``--preview``)."""

    def __init__(self, writer: PreviewWriter) -> None:
        self.writer = writer

    def on_frame(self, pipeline: LoopView, image: np.ndarray, capture_time: float) -> None:
        stages = pipeline.times.summary() if pipeline.frames % self.writer.every_n == 0 else {}
        total = stages.get("total", {}).get("mean_ms", 0.0)
        footer = (f"frame {pipeline.frames}  {pipeline.fps:.1f} fps  {total:.1f} ms/frame  "
                  f"{pipeline.classifier_name}")
        self.writer.write(image, pipeline.visible_faces(capture_time), pipeline.frames, footer=footer)

    def on_stop(self, pipeline: LoopView) -> None:
        self.writer.close()
