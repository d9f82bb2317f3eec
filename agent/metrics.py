"""Prometheus metrics through node_exporter's textfile collector: no listening socket on the board.

With ``metrics.textfile: /var/lib/prometheus/node-exporter/fer-agent.prom``
the agent rewrites that file every ``publish.stats_interval_s`` (and once at
a clean stop) in Prometheus' text exposition format; node_exporter, started
with ``--collector.textfile.directory`` pointing at the directory, serves it
with its own metrics. The file is written to a temporary name in the same
directory and renamed over the old one, so node_exporter never reads half a file.

The format is a few lines of text, so it is written here rather than through
``prometheus_client`` (which the board would otherwise need only for this);
the tests parse the file with ``prometheus_client``'s parser.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from agent.contracts.errors import ConfigError
from agent.pipeline import LoopView, Observer

log = logging.getLogger(__name__)

PREFIX = "fer_agent"
_ERROR_LOG_INTERVAL_S = 600.0


@dataclass
class MetricsConfig:
    textfile: str | None = field(default=None, metadata={
        "doc": "write Prometheus metrics to this file (a .prom file in node_exporter's "
               "--collector.textfile.directory) every publish.stats_interval_s; empty = off"})

    def __post_init__(self) -> None:
        if self.textfile is not None and not self.textfile.endswith(".prom"):
            raise ValueError(f"textfile: {self.textfile!r} must end in .prom (node_exporter reads only *.prom files)")


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape(str(v))}"' for k, v in labels.items()) + "}"


def _number(v: float) -> str:
    return repr(float(v)) if isinstance(v, float) else str(int(v))


class Exposition:
    """Builds one text-format file: each metric family once, with HELP and TYPE."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str,
               samples: Iterable[tuple[dict[str, str], float]]) -> None:
        full = f"{PREFIX}_{name}"
        self.lines.append(f"# HELP {full} {help_text}")
        self.lines.append(f"# TYPE {full} {kind}")
        for labels, value in samples:
            self.lines.append(f"{full}{_labels(labels)} {_number(value)}")

    def one(self, name: str, kind: str, help_text: str, value: float) -> None:
        self.family(name, kind, help_text, [({}, value)])

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def write_atomically(path: Path, text: str) -> None:
    """Temporary file in the same directory, then rename: readers see the old file or the new one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)  # node_exporter runs as another user
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise


class MetricsObserver(Observer):
    """Counts events by type and label per frame; writes the textfile every ``interval_s`` and at the end."""

    def __init__(self, textfile: str, interval_s: float, clock=time.monotonic) -> None:
        self.path = Path(textfile)
        parent = self.path.parent
        if not parent.is_dir():
            raise ConfigError(f"metrics.textfile: directory {parent} does not exist")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise ConfigError(f"metrics.textfile: directory {parent} is not writable by this user")
        self.interval_s = interval_s
        self._clock = clock
        self._last = clock()
        self._started_wall = time.time()
        self.events: dict[tuple[str, str], int] = {}
        self.writes = 0
        self.failures = 0
        self._next_error_log = 0.0

    def on_start(self, pipeline: LoopView) -> None:
        self.write(pipeline)

    def on_frame(self, pipeline: LoopView, image: np.ndarray, capture_time: float) -> None:
        if pipeline.frame_events:
            self._count(pipeline)
        now = self._clock()
        if now - self._last >= self.interval_s:
            self._last = now
            self.write(pipeline)

    def on_stop(self, pipeline: LoopView) -> None:
        self._count(pipeline)  # the faces leaving at the end (the pipeline replaced the last frame's events)
        self.write(pipeline)

    def _count(self, pipeline: LoopView) -> None:
        for e in pipeline.frame_events:
            key = (e.type, e.face.label)
            self.events[key] = self.events.get(key, 0) + 1

    def render(self, pipeline: LoopView) -> str:
        stats = pipeline.stats()
        pub = pipeline.publisher
        ctx = pipeline.context
        m = Exposition()
        m.family("info", "gauge", "Constant 1; the labels say what runs.", [({
            "device_id": ctx.device_id if ctx else "",
            "backend": ctx.backend if ctx else pipeline.classifier_name,
            "model": pipeline.model_name,
            "model_version": pipeline.model_version,
            "detector": pipeline.detector_detail(),
            "agent_version": ctx.agent_version if ctx else "",
        }, 1)])
        m.one("start_time_seconds", "gauge", "When the agent started, UNIX seconds.", self._started_wall)
        m.one("frames_total", "counter", "Frames processed.", stats["frames"])
        m.one("fps", "gauge", "Frames per second over the last 120 frames.", float(stats["fps"]))
        m.one("dropped_frames_total", "counter", "Frames the source dropped because the loop was behind.",
              stats["dropped_frames"])
        m.one("source_reopens_total", "counter", "Times a live source was opened again after a failure.",
              stats.get("source_reopens", 0))
        m.one("failed_inferences_total", "counter", "Frames skipped because inference failed.",
              stats["failed_inferences"])
        m.one("faces", "gauge", "Faces detected in the latest frame.", stats["faces"])
        stages = stats["stages"]
        m.family("stage_latency_mean_seconds", "gauge", "Mean time per frame in each stage (last 512 frames).",
                 [({"stage": s}, v["mean_ms"] / 1000.0) for s, v in stages.items()])
        m.family("stage_latency_p95_seconds", "gauge", "95th percentile time per frame in each stage (last 512).",
                 [({"stage": s}, v["p95_ms"] / 1000.0) for s, v in stages.items()])
        m.family("events_total", "counter", "Face events published, by type and label.",
                 [({"type": t, "label": lab}, n) for (t, lab), n in sorted(self.events.items())])
        m.one("mqtt_connected", "gauge", "1 while connected to the MQTT broker.", int(bool(pub.connected)))
        m.one("outbox_depth", "gauge", "Events and state not yet acknowledged by the broker.", pub.outbox_depth)
        m.one("outbox_dropped_total", "counter", "Messages dropped by the outbox limits.",
              int(getattr(pub, "dropped", 0)))
        return m.text()

    def write(self, pipeline: LoopView) -> None:
        """Never stops the agent: a failed write is logged (once per 10 minutes) and retried next interval."""
        try:
            write_atomically(self.path, self.render(pipeline))
            self.writes += 1
        except OSError as exc:
            self.failures += 1
            now = self._clock()
            if now >= self._next_error_log:
                self._next_error_log = now + _ERROR_LOG_INTERVAL_S
                log.warning("metrics.textfile: cannot write %s: %s (%d failure(s) so far)", self.path,
                            exc.strerror or exc, self.failures)
