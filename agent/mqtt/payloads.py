"""JSON payloads on the wire: one builder per topic, each matching a schema in ``agent/schemas``.

The builders are pure functions of the pipeline's dataclasses
(:mod:`agent.contracts.events`) and the :class:`~agent.contracts.events.PublishContext`, so the
contract in ``docs/mqtt.md`` can be tested without a broker. Bump
``SCHEMA_VERSION`` (and the schema files) on any incompatible change.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from agent.contracts.events import Event, FaceState, PublishContext, StateSnapshot

SCHEMA_VERSION = 1
STATUS_ONLINE = "online"
STATUS_OFFLINE = "offline"
SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schemas"
SCHEMA_FILES = {
    "status": "status.schema.json",
    "event": "event.schema.json",
    "state": "state.schema.json",
    "stats": "stats.schema.json",
    "summary": "summary.schema.json",
    "ha_sensor": "ha_sensor_discovery.schema.json",
}


def iso_utc(t: float) -> str:
    """ISO-8601 UTC with milliseconds and a ``Z``: sorts as text, parses everywhere."""
    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _box(face: FaceState) -> dict[str, float]:
    x, y, w, h = face.box
    return {"x": round(float(x), 4), "y": round(float(y), 4), "w": round(float(w), 4), "h": round(float(h), 4)}


def _model(ctx: PublishContext) -> dict[str, str]:
    return {"name": ctx.model_name, "version": ctx.model_version}


def event_payload(event: Event, ctx: PublishContext, event_id: str, seq: int) -> dict[str, Any]:
    face = event.face
    return {
        "schema_version": SCHEMA_VERSION,
        "event_id": event_id,
        "seq": seq,
        "type": event.type,
        "device_id": ctx.device_id,
        "face_id": int(face.face_id),
        "box": _box(face),
        "label": face.label,
        "confidence": round(float(face.confidence), 4),
        "probabilities": {k: round(float(v), 4) for k, v in face.probabilities.items()},
        "previous_label": event.previous_label,
        "capture_time": iso_utc(event.capture_time),
        "frame": int(event.frame_number),
        "model": _model(ctx),
        "backend": ctx.backend,
    }


def state_payload(snapshot: StateSnapshot, ctx: PublishContext) -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION,
        "device_id": ctx.device_id,
        "time": iso_utc(snapshot.capture_time),
        "frame": int(snapshot.frame_number),
        "face_count": len(snapshot.faces),
        "dominant": snapshot.dominant,
        "faces": [
            {"face_id": int(f.face_id), "label": f.label, "confidence": round(float(f.confidence), 4), "box": _box(f)}
            for f in snapshot.faces
        ],
    }


def _stage(v: Mapping[str, Any]) -> dict[str, float]:
    return {"mean_ms": round(float(v.get("mean_ms", 0.0)), 3), "p95_ms": round(float(v.get("p95_ms", 0.0)), 3)}


def stats_payload(stats: Mapping[str, Any], ctx: PublishContext, *, uptime_s: float, outbox_depth: int,
                  outbox_dropped: int, now: float | None = None,
                  outbox_trouble: Mapping[str, int] | None = None) -> dict[str, Any]:
    """The pipeline's counters plus what only the publish stage knows (outbox, uptime, context)."""
    payload: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "device_id": ctx.device_id,
        "time": iso_utc(time.time() if now is None else now),
        "fps": round(float(stats.get("fps", 0.0)), 2),
        "frames": int(stats.get("frames", 0)),
        "dropped_frames": int(stats.get("dropped_frames", 0)),
        "source_reopens": int(stats.get("source_reopens", 0)),
        "failed_inferences": int(stats.get("failed_inferences", 0)),
        "faces": int(stats.get("faces", 0)),
        "stages": {str(k): _stage(v) for k, v in (stats.get("stages") or {}).items()},
        "outbox": {"depth": int(outbox_depth), "dropped": int(outbox_dropped),
                   **{str(k): int(v) for k, v in (outbox_trouble or {}).items()}},
        "backend": ctx.backend,
        "model": _model(ctx),
        "uptime_s": round(float(uptime_s), 1),
        "agent_version": ctx.agent_version,
    }
    if ctx.extra:
        payload["extra"] = dict(ctx.extra)
    return payload


def encode(payload: Mapping[str, Any]) -> bytes:
    """Compact UTF-8 JSON; NaN/Infinity are refused rather than sent as invalid JSON."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")


def load_schema(name: str) -> dict[str, Any]:
    """One of ``SCHEMA_FILES``' schemas, for tests and for dashboards that validate."""
    return json.loads((SCHEMA_DIR / SCHEMA_FILES[name]).read_text(encoding="utf-8"))
