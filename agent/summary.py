"""The audience summary: how the room reacted over the last minute, for dashboards that chart it.

Per-face events answer "who showed what, when"; a dashboard that wants
"how is the audience reacting, minute by minute" would have to rebuild that
from them. :class:`AudienceWindow` keeps it on the board instead: a ring of
fixed time buckets (``bucket_s``, 1 s by default) over the sliding
``publish.summary_window_s``, filled from the tracker's smoothed state on every
frame, and :class:`SummaryObserver` publishes the retained
``<prefix>/<device_id>/summary`` every ``publish.summary_interval_s``.

What counts, per frame: every *announced* face (one a dashboard has had an
``appeared`` for) *seen in this frame*, under the label the events and the
state carry (the smoothed label with its hysteresis), for the time since the
previous frame (at most ``max_gap_s``, so a stalled source does not credit a
minute to whoever was last in view). Faces the tracker still holds while it
waits out ``tracking.leave_after_s`` are not counted: that would add up to a
second of face-time per visit that nobody was seen.

Cost on the frame loop: O(faces) scalar stores into preallocated arrays; the
buckets are summed and the JSON built only when a summary is due.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from agent.contracts.events import PublishContext
from agent.mqtt.payloads import SCHEMA_VERSION, iso_utc
from agent.pipeline import LoopView, Observer
from agent.track import Track


class AudienceWindow:
    """Face-time per label in a ring of ``bucket_s`` buckets covering the last ``window_s`` seconds."""

    def __init__(self, labels: tuple[str, ...], window_s: float, bucket_s: float = 1.0,
                 max_gap_s: float = 1.0) -> None:
        self.labels = labels
        self.window_s = float(window_s)
        self.bucket_s = float(bucket_s)
        self.max_gap_s = float(max_gap_s)
        n = max(1, int(math.ceil(self.window_s / self.bucket_s)))
        self.n = n
        self._index = {label: i for i, label in enumerate(labels)}
        self._label_s = np.zeros((n, len(labels)), np.float64)  # face-seconds per label
        self._conf_s = np.zeros(n, np.float64)  # sum of confidence x seconds (face-time weighted)
        self._seen_s = np.zeros(n, np.float64)  # seconds of frames observed
        self._max = np.zeros(n, np.int64)  # most faces in one frame
        self._frames = np.zeros(n, np.int64)
        self._key = np.full(n, -1, np.int64)  # which bucket (capture_time // bucket_s) a slot holds
        self._prev: float | None = None
        self._first: float | None = None
        self.last_time: float | None = None

    def reset(self) -> None:
        self._key[:] = -1
        self._prev = self._first = self.last_time = None

    def _slot(self, t: float) -> int:
        key = int(t // self.bucket_s)
        slot = key % self.n
        if self._key[slot] != key:  # a bucket from a window ago (or never used): start it afresh
            self._key[slot] = key
            self._label_s[slot] = 0.0
            self._conf_s[slot] = 0.0
            self._seen_s[slot] = 0.0
            self._max[slot] = 0
            self._frames[slot] = 0
        return slot

    def add(self, capture_time: float, tracks: list[Track]) -> None:
        """One frame: credit each announced face seen at ``capture_time`` with the time since the last frame."""
        prev = self._prev
        if prev is not None and capture_time < prev:  # the clock went back (a looping file): start over
            self.reset()
            prev = None
        self._prev = self.last_time = capture_time
        if prev is None:
            self._first = capture_time
        dt = min(capture_time - prev, self.max_gap_s) if prev is not None else 0.0
        slot = self._slot(capture_time)
        self._frames[slot] += 1
        self._seen_s[slot] += dt
        count = 0
        index = self._index
        row = self._label_s[slot]
        for t in tracks:
            if not t.announced or t.last_seen != capture_time or t.label is None:
                continue
            count += 1
            i = index[t.label]
            row[i] += dt
            self._conf_s[slot] += dt * float(t.probs[i])
        if count > self._max[slot]:
            self._max[slot] = count

    def summary(self, now: float | None = None) -> dict[str, Any]:
        """The window ending at ``now`` (default: the last frame) as plain numbers (see summary.schema.json)."""
        end = self.last_time if now is None else now
        if end is None:
            return empty_summary(self.labels)
        last_key = int(end // self.bucket_s)
        live = (self._key > last_key - self.n) & (self._key <= last_key)
        label_s = self._label_s[live].sum(axis=0)
        face_s = float(label_s.sum())
        seen_s = float(self._seen_s[live].sum())
        start = max((last_key - self.n + 1) * self.bucket_s, self._first if self._first is not None else end)
        shares = label_s / face_s if face_s > 0 else np.zeros(len(self.labels))
        return {
            "start": start,
            "end": end,
            "observed_s": seen_s,
            "frames": int(self._frames[live].sum()),
            "faces_mean": face_s / seen_s if seen_s > 0 else 0.0,
            "faces_max": int(self._max[live].max()) if live.any() else 0,
            "face_seconds": face_s,
            "shares": {label: float(s) for label, s in zip(self.labels, shares, strict=True)},
            "dominant": self.labels[int(np.argmax(label_s))] if face_s > 0 else None,
            "mean_confidence": float(self._conf_s[live].sum()) / face_s if face_s > 0 else None,
        }


def empty_summary(labels: tuple[str, ...]) -> dict[str, Any]:
    return {"start": None, "end": None, "observed_s": 0.0, "frames": 0, "faces_mean": 0.0, "faces_max": 0,
            "face_seconds": 0.0, "shares": dict.fromkeys(labels, 0.0), "dominant": None, "mean_confidence": None}


def summary_payload(s: dict[str, Any], ctx: PublishContext, window_s: float) -> dict[str, Any]:
    """The wire form (``agent/schemas/summary.schema.json``); needs a window with at least one frame."""
    conf = s["mean_confidence"]
    return {
        "schema_version": SCHEMA_VERSION,
        "device_id": ctx.device_id,
        "window": {"start": iso_utc(s["start"]), "end": iso_utc(s["end"]), "length_s": round(float(window_s), 3),
                   "observed_s": round(s["observed_s"], 3), "frames": s["frames"]},
        "faces": {"mean": round(s["faces_mean"], 3), "max": s["faces_max"]},
        "face_seconds": round(s["face_seconds"], 3),
        "shares": {k: round(v, 4) for k, v in s["shares"].items()},
        "dominant": s["dominant"],
        "mean_confidence": None if conf is None else round(conf, 4),
    }


class SummaryObserver(Observer):
    """Fills an :class:`AudienceWindow` per frame; publishes the summary every ``interval_s`` of capture time."""

    def __init__(self, labels: tuple[str, ...], window_s: float, interval_s: float) -> None:
        self.window = AudienceWindow(labels, window_s)
        self.interval_s = interval_s
        self._next: float | None = None
        self.published: list[dict[str, Any]] = []  # the last few payloads (tests, the report)

    def on_frame(self, pipeline: LoopView, image: np.ndarray, capture_time: float) -> None:
        self.window.add(capture_time, pipeline.tracks)
        if self._next is None or capture_time < self._next - self.interval_s:  # first frame, or the clock went back
            self._next = capture_time + self.interval_s
        elif capture_time >= self._next:
            self._next = capture_time + self.interval_s
            self.publish(pipeline)

    def on_stop(self, pipeline: LoopView) -> None:
        if self.window.last_time is not None:
            self.publish(pipeline)

    def publish(self, pipeline: LoopView) -> None:
        ctx = pipeline.context or PublishContext("local", pipeline.model_name, pipeline.model_version,
                                                 pipeline.classifier_name, "")
        payload = summary_payload(self.window.summary(), ctx, self.window.window_s)
        self.published = [*self.published[-9:], payload]
        pipeline.publisher.publish_summary(payload)
