"""Interpret stage: stable ids, EMA smoothing, sparse events (one per real change, none for jitter)."""

from __future__ import annotations

import numpy as np
import pytest

from agent.boxes import iou as box_iou
from agent.contracts.labels import LABELS
from agent.contracts.manifest import to_probabilities
from agent.contracts.preprocess import Box
from agent.track import Tracker, TrackingConfig

W, H, FPS = 640, 480, 30.0


def probs_for(label: str, p: float = 0.8) -> np.ndarray:
    v = np.full(len(LABELS), (1 - p) / (len(LABELS) - 1), np.float32)
    v[LABELS.index(label)] = p
    return v


class Driver:
    """Feeds a tracker frame by frame at 30 frames/s and collects its events."""

    def __init__(self, **cfg) -> None:
        self.tracker = Tracker(TrackingConfig(**cfg), LABELS)
        self.frame = 0
        self.events = []

    def step(self, faces: list[tuple[Box, str]] | list[tuple[Box, np.ndarray]]):
        self.frame += 1
        boxes = [b for b, _ in faces]
        probs = np.array([probs_for(x) if isinstance(x, str) else x for _, x in faces], np.float32).reshape(
            len(faces), len(LABELS)
        )
        ev = self.tracker.update(boxes, probs, W, H, self.frame, 1000.0 + self.frame / FPS)
        self.events += ev
        return ev

    def types(self):
        return [(e.type, e.face.face_id) for e in self.events]


def test_ids_stable_while_faces_move_and_new_face_gets_new_id():
    d = Driver(update_interval_s=0)
    for i in range(30):
        faces = [(Box(100 + 2 * i, 100, 80, 80), "happy")]
        if i >= 10:
            faces.append((Box(400 - 2 * i, 200, 90, 90), "sad"))
        d.step(faces)
    ids = sorted(t.face_id for t in d.tracker.tracks)
    assert ids == [1, 2]
    assert d.types() == [("appeared", 1), ("appeared", 2)]
    assert [e.face.label for e in d.events] == ["happy", "sad"]


def test_crossing_faces_keep_their_ids_by_best_overlap():
    d = Driver(update_interval_s=0)
    for i in range(20):
        d.step([(Box(100 + 5 * i, 100, 80, 80), "happy"), (Box(300 - 5 * i, 110, 80, 80), "sad")])
    by_id = {t.face_id: LABELS[int(np.argmax(t.probs))] for t in d.tracker.tracks}
    assert by_id == {1: "happy", 2: "sad"}


def test_jitter_shorter_than_min_duration_sends_no_change():
    d = Driver(update_interval_s=0, min_duration_s=0.5, ema_alpha=0.5)
    box = Box(200, 150, 100, 100)
    for i in range(90):  # 3 s of 'happy' with 4-frame (0.13 s) bursts of 'surprise' every second
        d.step([(box, "surprise" if i % 30 in (10, 11, 12, 13) else "happy")])
    assert d.types() == [("appeared", 1)]


def test_one_change_event_per_real_change_with_previous_label():
    d = Driver(update_interval_s=0, min_duration_s=0.5, ema_alpha=0.3)
    box = Box(200, 150, 100, 100)
    for label in ["neutral"] * 45 + ["happy"] * 45 + ["sad"] * 45:
        d.step([(box, label)])
    changes = [e for e in d.events if e.type == "changed"]
    assert [(e.previous_label, e.face.label) for e in changes] == [("neutral", "happy"), ("happy", "sad")]
    # hysteresis: the change comes at least min_duration_s after the new label became dominant
    assert changes[0].frame_number >= 45 + int(0.5 * FPS)


def test_low_confidence_does_not_change_label():
    d = Driver(update_interval_s=0, min_confidence=0.6, min_duration_s=0.1)
    box = Box(200, 150, 100, 100)
    for label, p in [("neutral", 0.9)] * 30 + [("happy", 0.45)] * 60:
        d.step([(box, probs_for(label, p))])
    assert d.types() == [("appeared", 1)]


def test_left_after_timeout_and_only_for_announced_faces():
    d = Driver(update_interval_s=0, leave_after_s=0.5, confirm_frames=3)
    d.step([(Box(10, 10, 60, 60), "happy")])  # a one-frame blip: never announced
    for _ in range(5):
        d.step([(Box(300, 200, 80, 80), "happy")])
    for _ in range(20):
        d.step([])
    assert d.types() == [("appeared", 2), ("left", 2)]
    assert d.tracker.tracks == []


def test_short_miss_keeps_the_id():
    d = Driver(update_interval_s=0, leave_after_s=1.0)
    box = Box(300, 200, 80, 80)
    for i in range(40):
        d.step([] if 10 <= i < 20 else [(box, "happy")])  # 0.33 s without a detection
    assert d.types() == [("appeared", 1)]


def test_periodic_update_events():
    d = Driver(update_interval_s=1.0)
    for _ in range(int(3.5 * FPS)):
        d.step([(Box(300, 200, 80, 80), "happy")])
    assert [t for t, _ in d.types()] == ["appeared", "update", "update", "update"]


def test_ema_smoothing_and_state_snapshot():
    d = Driver(update_interval_s=0, ema_alpha=0.5)
    box = Box(320, 240, 64, 48)
    d.step([(box, probs_for("happy", 1.0))])
    d.step([(box, probs_for("sad", 1.0))])
    face = d.tracker.faces()[0]
    assert face.probabilities["happy"] == pytest.approx(0.5, abs=1e-3)
    assert face.probabilities["sad"] == pytest.approx(0.5, abs=1e-3)
    assert face.box == (0.5, 0.5, 0.1, 0.1)
    snap = d.tracker.snapshot(2, 0.0)
    assert snap.dominant == face.label and len(snap.faces) == 1
    assert [e.type for e in d.tracker.clear(3, 0.0)] == ["left"]


def test_softmax_only_for_logits():
    logits = np.array([[1.0, 2.0, 3.0, 4.0, 0.0, 0.0, 0.0]], np.float32)
    p = to_probabilities(logits, "logits")
    assert p.sum() == pytest.approx(1.0) and int(np.argmax(p)) == 3
    assert np.array_equal(to_probabilities(logits, "probabilities"), logits)


def test_box_iou():
    assert box_iou((0, 0, 1, 1), (0, 0, 1, 1)) == 1.0
    assert box_iou((0, 0, 1, 1), (2, 2, 1, 1)) == 0.0
    assert box_iou((0, 0, 2, 1), (1, 0, 2, 1)) == pytest.approx(1 / 3)


class RateDriver(Driver):
    """The same at another frame rate."""

    def __init__(self, fps: float, **cfg) -> None:
        super().__init__(**cfg)
        self.fps = fps

    def step(self, faces):
        self.frame += 1
        boxes = [b for b, _ in faces]
        probs = np.array([probs_for(x) if isinstance(x, str) else x for _, x in faces], np.float32).reshape(
            len(faces), len(LABELS))
        ev = self.tracker.update(boxes, probs, W, H, self.frame, 1000.0 + self.frame / self.fps)
        self.events += ev
        return ev


@pytest.mark.parametrize("fps", [15.0, 60.0])
def test_defaults_in_seconds_behave_alike_at_15_and_60_fps(fps):
    """Smoothing and hysteresis are in seconds: the change comes at the same time, jitter sends nothing."""
    box = Box(200, 150, 100, 100)
    d = RateDriver(fps, update_interval_s=0)
    for label in ["neutral"] * int(fps) + ["happy"] * int(fps):
        d.step([(box, label)])
    (change,) = [e for e in d.events if e.type == "changed"]
    latency = change.capture_time - (1000.0 + (int(fps) + 1) / fps)
    cfg = TrackingConfig()
    assert cfg.min_duration_s <= latency <= cfg.min_duration_s + 0.2  # same time at both rates, within a frame or two
    jitter = RateDriver(fps, update_interval_s=0)
    for i in range(int(3 * fps)):  # 0.13 s bursts of 'surprise' once a second
        jitter.step([(box, "surprise" if 0.33 <= (i / fps) % 1.0 < 0.46 else "happy")])
    assert jitter.types() == [("appeared", 1)]


def test_smoothing_weight_follows_the_time_between_frames():
    t = Tracker(TrackingConfig(smoothing_s=0.2), LABELS)
    assert t._weight(0.2) == pytest.approx(1 - np.exp(-1.0))
    assert t._weight(1 / 60) < t._weight(1 / 15) < 1.0
    assert Tracker(TrackingConfig(smoothing_s=0), LABELS)._weight(0.01) == 1.0
    assert Tracker(TrackingConfig(ema_alpha=0.3), LABELS)._weight(5.0) == 0.3  # the per-frame weight, when set


def test_a_box_that_jumps_does_not_inherit_the_smoothed_probabilities():
    """Another person sits down in about the same place: the box still matches, but overlaps little."""
    d = Driver(update_interval_s=0, smoothing_s=1.0, iou_threshold=0.2, reset_iou=0.5)
    for _ in range(30):
        d.step([(Box(200, 150, 100, 100), "neutral")])
    d.step([(Box(240, 150, 100, 100), probs_for("happy", 0.9))])  # IoU 0.43: same track, a jump
    (track,) = d.tracker.tracks
    assert track.face_id == 1 and LABELS[int(np.argmax(track.probs))] == "happy"
    assert track.probs[LABELS.index("happy")] == pytest.approx(0.9)
    d2 = Driver(update_interval_s=0, smoothing_s=1.0, iou_threshold=0.2, reset_iou=0.5)
    for _ in range(30):
        d2.step([(Box(200, 150, 100, 100), "neutral")])
    d2.step([(Box(205, 150, 100, 100), probs_for("happy", 0.9))])  # a small move: smoothed as before
    assert LABELS[int(np.argmax(d2.tracker.tracks[0].probs))] == "neutral"
