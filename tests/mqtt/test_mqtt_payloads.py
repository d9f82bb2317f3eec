"""Wire contract without a broker: every payload builder's output validates against its JSON Schema."""

from __future__ import annotations

import copy
import json
import re

import jsonschema
import pytest

from agent.contracts.events import Event, FaceState, PublishContext, StateSnapshot
from agent.contracts.labels import LABELS
from agent.mqtt.discovery import discovery_configs
from agent.mqtt.payloads import SCHEMA_FILES, encode, event_payload, iso_utc, load_schema, state_payload, stats_payload
from agent.mqtt.topics import Topics

CTX = PublishContext(
    device_id="rb5-01", model_name="fer-cnn", model_version="1.2.0", backend="snpe-dsp", agent_version="0.1.0"
)
PROBS = {label: p for label, p in zip(LABELS, (0.05, 0.0, 0.05, 0.7, 0.1, 0.05, 0.05), strict=False)}
FACE = FaceState(face_id=3, box=(0.1, 0.2, 0.3, 0.4), label="happy", confidence=0.7, probabilities=PROBS)
STATS = {
    "fps": 29.7,
    "frames": 1200,
    "dropped_frames": 4,
    "source_reopens": 3,
    "failed_inferences": 1,
    "faces": 2,
    "stages": {"capture": {"mean_ms": 1.2, "p95_ms": 2.5}, "infer": {"mean_ms": 8.0, "p95_ms": 11.0}},
}


def validator(name: str) -> jsonschema.protocols.Validator:
    schema = load_schema(name)
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def test_every_schema_file_is_valid_json_schema() -> None:
    for name in SCHEMA_FILES:
        validator(name)


def test_event_payload_validates_and_carries_the_contract() -> None:
    ev = Event(type="changed", face=FACE, frame_number=42, capture_time=1_700_000_000.25, previous_label="sad")
    p = event_payload(ev, CTX, "abc123def456", 7)
    validator("event").validate(json.loads(encode(p)))
    assert p["capture_time"] == "2023-11-14T22:13:20.250Z"
    assert set(p["probabilities"]) == set(LABELS)
    assert p["box"] == {"x": 0.1, "y": 0.2, "w": 0.3, "h": 0.4}
    assert (p["model"], p["backend"], p["frame"], p["seq"]) == (
        {"name": "fer-cnn", "version": "1.2.0"},
        "snpe-dsp",
        42,
        7,
    )


def test_event_schema_rejects_incomplete_payloads() -> None:
    ev = Event(type="appeared", face=FACE, frame_number=1, capture_time=0.0)
    good = event_payload(ev, CTX, "abc123def456", 1)
    v = validator("event")
    bad = copy.deepcopy(good)
    del bad["probabilities"]["fear"]
    with pytest.raises(jsonschema.ValidationError):
        v.validate(bad)
    bad = copy.deepcopy(good)
    bad["type"] = "vanished"
    with pytest.raises(jsonschema.ValidationError):
        v.validate(bad)
    bad = copy.deepcopy(good)
    bad["capture_time"] = "yesterday"
    with pytest.raises(jsonschema.ValidationError):
        v.validate(bad)


def test_state_payload_with_and_without_faces() -> None:
    v = validator("state")
    p = state_payload(StateSnapshot(faces=[FACE], dominant="happy", frame_number=9, capture_time=1.0), CTX)
    v.validate(p)
    assert p["face_count"] == 1 and p["faces"][0]["label"] == "happy"
    empty = state_payload(StateSnapshot(faces=[], dominant=None, frame_number=10, capture_time=2.0), CTX)
    v.validate(empty)
    assert empty["dominant"] is None and empty["face_count"] == 0


def test_stats_payload_adds_publisher_and_context_fields() -> None:
    p = stats_payload(STATS, CTX, uptime_s=12.345, outbox_depth=5, outbox_dropped=2, now=0.0)
    validator("stats").validate(p)
    assert p["outbox"] == {"depth": 5, "dropped": 2}
    assert p["stages"]["infer"] == {"mean_ms": 8.0, "p95_ms": 11.0}
    assert (p["backend"], p["agent_version"], p["uptime_s"]) == ("snpe-dsp", "0.1.0", 12.3)
    assert p["source_reopens"] == 3  # a camera that keeps dropping shows on the dashboard


def test_status_schema() -> None:
    v = validator("status")
    v.validate("online")
    v.validate("offline")
    with pytest.raises(jsonschema.ValidationError):
        v.validate("maybe")


def test_nan_is_refused_rather_than_sent_as_invalid_json() -> None:
    with pytest.raises(ValueError):
        encode({"fps": float("nan")})


def test_topics_layout() -> None:
    t = Topics("fer", "rb5-01")
    assert (t.status, t.events, t.state, t.stats) == (
        "fer/rb5-01/status",
        "fer/rb5-01/events",
        "fer/rb5-01/state",
        "fer/rb5-01/stats",
    )
    assert t.discovery_dominant == "homeassistant/sensor/fer_rb5-01/dominant_emotion/config"
    assert t.ha_birth == "homeassistant/status"


def test_home_assistant_discovery_configs() -> None:
    t = Topics("fer", "RB5.01", "ha")
    configs = discovery_configs(t, CTX)
    assert set(configs) == {"ha/sensor/fer_RB5_01/dominant_emotion/config", "ha/sensor/fer_RB5_01/face_count/config",
                            "ha/sensor/fer_RB5_01/audience_faces_mean/config",
                            *(f"ha/sensor/fer_RB5_01/audience_{label}_share/config" for label in LABELS)}
    v = validator("ha_sensor")
    ids = set()
    for cfg in configs.values():
        v.validate(cfg)
        assert cfg["availability_topic"] == t.status and cfg["state_topic"] in (t.state, t.summary)
        assert re.fullmatch(r"sensor\.[a-z0-9_]+", cfg["default_entity_id"])
        assert "object_id" not in cfg  # deprecated by HA 2025.10, removed in 2026.4
        ids.add(cfg["unique_id"])
        assert cfg["device"]["identifiers"] == ["fer_RB5_01"]
    assert len(ids) == len(configs)
    dominant = configs[t.discovery_dominant]
    assert dominant["options"] == [*LABELS, "none"] and dominant["device_class"] == "enum"


def test_iso_utc() -> None:
    assert iso_utc(0) == "1970-01-01T00:00:00.000Z"


def test_home_assistant_templates_render_on_our_state_payload() -> None:
    """HA renders value_template with Jinja2 and ``value_json`` = the decoded state payload."""
    jinja2 = pytest.importorskip("jinja2")
    env = jinja2.Environment()
    t = Topics("fer", "rb5")
    configs = discovery_configs(t, CTX)
    with_face = state_payload(StateSnapshot(faces=[FACE], dominant="happy", frame_number=1, capture_time=0.0), CTX)
    no_face = state_payload(StateSnapshot(faces=[], dominant=None, frame_number=2, capture_time=0.0), CTX)
    dom = env.from_string(configs[t.discovery_dominant]["value_template"])
    count = env.from_string(configs[t.discovery_face_count]["value_template"])
    assert dom.render(value_json=with_face) == "happy"
    assert dom.render(value_json=no_face) == "none"
    assert count.render(value_json=with_face) == "1" and count.render(value_json=no_face) == "0"
    attrs = env.from_string(configs[t.discovery_dominant]["json_attributes_template"]).render(value_json=with_face)
    assert json.loads(attrs)["faces"][0]["label"] == "happy"
