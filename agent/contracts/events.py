"""What the interpret stage hands to the publish stage.

Plain dataclasses with no MQTT or JSON knowledge: the publisher decides how
they look on the wire (see ``docs/mqtt.md`` and ``agent/schemas``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType

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


@dataclass(frozen=True)
class PublishContext:
    """Facts every payload carries; frozen, so a change is a new context the publisher swaps in whole.

    ``device_id`` is resolved once by whoever builds the context (the runner, from
    ``mqtt.device_id`` or the host name); the publisher uses it as given.
    """

    device_id: str
    model_name: str
    model_version: str
    backend: str
    agent_version: str
    extra: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "extra", MappingProxyType(dict(self.extra)))  # read-only, a copy of the caller's

    def with_backend(self, name: str, reason: str, detail: str | None = None) -> PublishContext:
        """The same facts with another backend (a fallback took over), its reason and detail in ``extra``."""
        extra = dict(self.extra, backend_reason=reason)
        if detail is not None:
            extra["backend_detail"] = detail
        return replace(self, backend=name, extra=extra)
