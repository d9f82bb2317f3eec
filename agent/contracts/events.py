"""What the interpret stage hands to the publish stage.

Plain dataclasses with no MQTT or JSON knowledge: the publisher decides how
they look on the wire (see ``docs/mqtt.md`` and ``agent/schemas``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

EVENT_TYPES = ("appeared", "changed", "update", "left")


@dataclass(frozen=True)
class FaceState:
    """One tracked face after smoothing."""

    face_id: int
    box: tuple[float, float, float, float]  # x, y, w, h normalised to 0..1 of the frame
    label: str  # dominant label after smoothing
    confidence: float  # smoothed probability of ``label``
    probabilities: dict[str, float]  # all labels, smoothed, in manifest label order


@dataclass(frozen=True)
class Event:
    type: str  # one of EVENT_TYPES
    face: FaceState
    frame_number: int
    capture_time: float  # UNIX seconds (UTC) when the frame was captured
    previous_label: str | None = None  # for "changed"


@dataclass(frozen=True)
class StateSnapshot:
    """Summary for dashboards that join late (retained)."""

    faces: list[FaceState]
    dominant: str | None  # most confident label over all faces, None when no faces
    frame_number: int
    capture_time: float


@dataclass
class PublishContext:
    """Constant facts every payload carries."""

    device_id: str
    model_name: str
    model_version: str
    backend: str
    agent_version: str
    extra: dict[str, str] = field(default_factory=dict)
