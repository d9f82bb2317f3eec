"""Interpret stage: scores -> probabilities -> tracked, smoothed faces -> events.

* A greedy IoU tracker gives each face a stable id across frames.
* Each face's probabilities are smoothed with an EMA whose time constant is
  ``tracking.smoothing_s``: a frame's weight is ``1 - exp(-dt / smoothing_s)``
  for the time ``dt`` since the face's previous frame, so a 15 frames/s camera
  and a 60 frames/s file smooth alike (``ema_alpha`` keeps the older per-frame
  weight for configs that set it). A detection that continues a face but
  overlaps its last box less than ``reset_iou`` (someone else sat down there)
  starts the smoothing afresh instead of inheriting the previous face's.
* Events are sparse, not one per frame: ``appeared`` once a new face has been
  seen ``confirm_frames`` times; ``changed`` when another emotion has been
  dominant, with at least ``min_confidence``, for ``min_duration_s``
  (hysteresis: jitter shorter than that sends nothing); ``update`` every
  ``update_interval_s`` per face; ``left`` when a face has not been seen for
  ``leave_after_s``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from agent.boxes import corners, iou_matrix
from agent.contracts.events import Event, FaceState, StateSnapshot
from agent.contracts.preprocess import Box


@dataclass
class TrackingConfig:
    iou_threshold: float = field(
        default=0.3,
        metadata={"doc": "a detection continues a face when their boxes overlap this much", "min": 0.0, "max": 1.0},
    )
    leave_after_s: float = field(default=1.0, metadata={"doc": "a face not seen for this long has left", "min": 0.0})
    confirm_frames: int = field(
        default=2, metadata={"doc": "frames a new face must be seen before it 'appeared'", "min": 1}
    )
    smoothing_s: float = field(
        default=0.15,
        metadata={"doc": "smoothing time constant in seconds: a frame dt after the previous one weighs "
                         "1 - exp(-dt/smoothing_s) (0 = none)", "min": 0.0},
    )
    ema_alpha: Optional[float] = field(
        default=None,
        metadata={"doc": "per-frame smoothing weight of the newest frame instead of smoothing_s (older configs; "
                         "depends on the frame rate); empty = smoothing_s", "min": 0.01, "max": 1.0},
    )
    reset_iou: float = field(
        default=0.5,
        metadata={"doc": "a detection that continues a face but overlaps its last box less than this (a jump: "
                         "another person in the same place) restarts the smoothing", "min": 0.0, "max": 1.0},
    )
    min_confidence: float = field(
        default=0.3,
        metadata={"doc": "a new dominant emotion needs at least this smoothed probability", "min": 0.0, "max": 1.0},
    )
    min_duration_s: float = field(
        default=0.25, metadata={"doc": "... and must stay dominant this long before 'changed' is sent", "min": 0.0}
    )
    update_interval_s: float = field(
        default=10.0, metadata={"doc": "periodic 'update' event per face (0 = off)", "min": 0.0, "min_if_set": 0.05}
    )


@dataclass
class Track:
    face_id: int
    box: tuple[float, float, float, float]  # normalised x, y, w, h
    probs: np.ndarray
    first_seen: float
    last_seen: float
    hits: int = 1
    announced: bool = False
    label: str | None = None  # last label sent in an event
    candidate: str | None = None  # a different dominant label waiting out min_duration_s
    candidate_since: float = 0.0
    last_event: float = 0.0


class Tracker:
    def __init__(self, cfg: TrackingConfig, labels: tuple[str, ...]) -> None:
        self.cfg = cfg
        self.labels = labels
        self.tracks: list[Track] = []
        self._next_id = 1

    def update(
        self, boxes: list[Box], probs: np.ndarray, frame_w: int, frame_h: int, frame_number: int, capture_time: float
    ) -> list[Event]:
        """One frame's faces (pixel boxes + probabilities ``[N, C]``) -> the events it causes."""
        cfg = self.cfg
        now = capture_time
        norm = [(b.x / frame_w, b.y / frame_h, b.w / frame_w, b.h / frame_h) for b in boxes]
        # Greedy matching: highest IoU pairs first.
        ious = iou_matrix(corners([t.box for t in self.tracks]), corners(norm)) if self.tracks and norm else None
        pairs = sorted(
            ((float(ious[ti, di]), ti, di) for ti in range(len(self.tracks)) for di in range(len(norm))),
            reverse=True,
        ) if ious is not None else []
        matched_t: set[int] = set()
        matched_d: set[int] = set()
        for iou, ti, di in pairs:
            if iou < cfg.iou_threshold:
                break
            if ti in matched_t or di in matched_d:
                continue
            matched_t.add(ti)
            matched_d.add(di)
            t = self.tracks[ti]
            t.box = norm[di]
            if iou < cfg.reset_iou:
                t.probs = probs[di].astype(np.float32)  # a jump: not the face the smoothed history belongs to
            else:
                w = self._weight(now - t.last_seen)
                t.probs = w * probs[di] + (1.0 - w) * t.probs
            t.last_seen = now
            t.hits += 1
        for di in range(len(norm)):
            if di not in matched_d:
                self.tracks.append(Track(self._next_id, norm[di], probs[di].astype(np.float32).copy(), now, now))
                self._next_id += 1

        events: list[Event] = []
        alive = []
        for t in self.tracks:
            if now - t.last_seen > cfg.leave_after_s:
                if t.announced:
                    events.append(Event("left", self._state(t), frame_number, capture_time, previous_label=None))
                continue
            alive.append(t)
            if t.last_seen != now:
                continue  # not seen this frame: keep its state, judge it when it is seen again
            events.extend(self._judge(t, frame_number, capture_time))
        self.tracks = alive
        return events

    def _weight(self, dt: float) -> float:
        """Weight of a new frame ``dt`` seconds after the face's previous one."""
        cfg = self.cfg
        if cfg.ema_alpha is not None:
            return cfg.ema_alpha
        if cfg.smoothing_s <= 0:
            return 1.0
        return float(-np.expm1(-max(dt, 0.0) / cfg.smoothing_s))

    def _judge(self, t: Track, frame_number: int, now: float) -> list[Event]:
        cfg = self.cfg
        top = int(np.argmax(t.probs))
        top_label, top_p = self.labels[top], float(t.probs[top])
        if not t.announced:
            if t.hits < cfg.confirm_frames:
                return []
            t.announced, t.label, t.last_event, t.candidate = True, top_label, now, None
            return [Event("appeared", self._state(t), frame_number, now)]
        if top_label != t.label and top_p >= cfg.min_confidence:
            if t.candidate != top_label:
                t.candidate, t.candidate_since = top_label, now
            if now - t.candidate_since >= cfg.min_duration_s:
                previous, t.label, t.candidate, t.last_event = t.label, top_label, None, now
                return [Event("changed", self._state(t), frame_number, now, previous_label=previous)]
        else:
            t.candidate = None
        if cfg.update_interval_s > 0 and now - t.last_event >= cfg.update_interval_s:
            t.last_event = now
            return [Event("update", self._state(t), frame_number, now)]
        return []

    def _state(self, t: Track) -> FaceState:
        label = t.label or self.labels[int(np.argmax(t.probs))]
        probs = {name: round(float(p), 4) for name, p in zip(self.labels, t.probs, strict=True)}
        return FaceState(t.face_id, tuple(round(v, 4) for v in t.box), label, probs[label], probs)  # type: ignore[arg-type]

    def faces(self) -> list[FaceState]:
        """Announced faces, as dashboards see them."""
        return [self._state(t) for t in self.tracks if t.announced]

    def visible(self, capture_time: float) -> list[FaceState]:
        """Faces seen in the frame taken at ``capture_time``, announced or not (for the preview)."""
        return [self._state(t) for t in self.tracks if t.last_seen == capture_time]

    def snapshot(self, frame_number: int, capture_time: float) -> StateSnapshot:
        faces = self.faces()
        dominant = max(faces, key=lambda f: f.confidence).label if faces else None
        return StateSnapshot(faces, dominant, frame_number, capture_time)

    def clear(self, frame_number: int, capture_time: float) -> list[Event]:
        """Every announced face leaves (shutdown or end of the source)."""
        events = [Event("left", self._state(t), frame_number, capture_time) for t in self.tracks if t.announced]
        self.tracks = []
        return events
