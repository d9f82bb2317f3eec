"""`fer-agent health` on a video file analysed slower than its frame rate (``realtime: false``).

The pipeline stamps such frames with the clip's timeline (so events mean the same at any speed); the
health file must still say when the last frame was processed, by the wall clock.
"""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np

from agent import capture
from agent.capture import SourceConfig, VideoFileSource
from agent.health import HealthReporter, check_health
from agent.observers import HealthObserver


class _Publisher:
    connected = True
    outbox_depth = 0
    problems: tuple[str, ...] = ()


class _Classifier:
    name = "tflite"


class _Pipeline:
    """What HealthObserver reads of the loop (its LoopView)."""

    def __init__(self) -> None:
        self.frames = 0
        self.last_frame_time = 0.0
        self.status = "running"
        self.publisher = _Publisher()
        self.classifier_name = _Classifier.name


def _clip(path: Path, fps: float, frames: int) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (64, 48))
    for i in range(frames):
        writer.write(np.full((48, 64, 3), i * 20 % 255, np.uint8))
    writer.release()
    return path


def test_a_clip_processed_slower_than_its_rate_is_healthy_while_frames_are_processed(
    tmp_path: Path, monkeypatch
) -> None:
    # a 30 fps clip opened 71 s ago and read at the agent's pace: its 5 frames sit at 0-0.13 s on the clip's
    # timeline, i.e. 71 s behind the clock, as after two minutes at 0.5 frames/s on a slow board
    source = VideoFileSource(SourceConfig(realtime=False), str(_clip(tmp_path / "clip.avi", 30.0, 5)))
    opened = time.time() - 71.0
    with monkeypatch.context() as m:
        m.setattr(capture.time, "time", lambda: opened)
        source.open()
    health_file = tmp_path / "health.json"
    observer = HealthObserver(HealthReporter(health_file, interval_s=0.0))
    pipeline = _Pipeline()
    while (frame := source.read()) is not None:
        pipeline.frames += 1
        pipeline.last_frame_time = frame.capture_time  # what the pipeline keeps: the clip's timeline
        observer.on_frame(pipeline, frame.image, frame.capture_time)
    source.close()
    assert pipeline.frames == 5 and pipeline.last_frame_time < time.time() - 70
    ok, message = check_health(health_file, max_age_s=30.0)
    assert ok, message
    assert message.startswith("5 frames, last 0.")

    # a loop that stops processing is still caught, by the same clock
    ok, message = check_health(health_file, max_age_s=30.0, now=time.time() + 45)
    assert not ok and message.startswith("no frames for 45 s"), message
