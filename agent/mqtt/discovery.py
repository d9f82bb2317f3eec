"""Home Assistant MQTT discovery: the board appears in HA with no manual setup.

Follows HA's published discovery schema: one retained config per entity under
``<discovery_prefix>/sensor/<node_id>/<object_id>/config``, with ``unique_id``,
a ``device`` block (so both sensors group under one device), ``origin``,
availability tied to our ``status`` topic (Last Will = ``offline``) and
``default_entity_id`` (HA 2025.10 replaced ``object_id`` with it; the old key
stops working in 2026.4, so it is not sent).
"""

from __future__ import annotations

import re
from typing import Any

from agent.contracts.events import PublishContext
from agent.contracts.labels import LABELS
from agent.mqtt.payloads import STATUS_OFFLINE, STATUS_ONLINE, encode
from agent.mqtt.topics import Topics

NO_FACE = "none"  # dominant-emotion sensor value when nobody is in view


def _device(topics: Topics, ctx: PublishContext, device_name: str | None) -> dict[str, Any]:
    return {
        "identifiers": [topics.node_id],
        "name": device_name or f"FER {topics.device_id}",
        "manufacturer": "fer-agent",
        "model": f"{ctx.model_name} {ctx.model_version} ({ctx.backend})",
        "sw_version": ctx.agent_version,
    }


def _common(topics: Topics, ctx: PublishContext, device_name: str | None, object_id: str, name: str,
            state_topic: str | None = None) -> dict[str, Any]:
    unique_id = f"{topics.node_id}_{object_id}"
    return {
        "name": name,
        "unique_id": unique_id,
        "default_entity_id": "sensor." + re.sub(r"[^a-z0-9_]", "_", unique_id.lower()),  # HA entity ids are lower-case
        "state_topic": state_topic or topics.state,
        "availability_topic": topics.status,
        "payload_available": STATUS_ONLINE,
        "payload_not_available": STATUS_OFFLINE,
        "device": _device(topics, ctx, device_name),
        "origin": {"name": "fer-agent", "sw_version": ctx.agent_version},
    }


def discovery_configs(topics: Topics, ctx: PublishContext, device_name: str | None = None) -> dict[str, dict[str, Any]]:
    """Topic -> config for every entity the agent offers (both read the retained ``state``)."""
    dominant = _common(topics, ctx, device_name, "dominant_emotion", "Dominant emotion")
    dominant.update({
        "device_class": "enum",
        "options": [*LABELS, NO_FACE],
        "value_template": "{{ value_json.dominant if value_json.dominant else '" + NO_FACE + "' }}",
        "json_attributes_topic": topics.state,
        "json_attributes_template": "{{ {'faces': value_json.faces, 'time': value_json.time} | tojson }}",
        "icon": "mdi:emoticon-outline",
    })
    count = _common(topics, ctx, device_name, "face_count", "Face count")
    count.update({
        "value_template": "{{ value_json.face_count }}",
        "state_class": "measurement",
        "icon": "mdi:account-multiple",
    })
    configs = {topics.discovery_dominant: dominant, topics.discovery_face_count: count}
    configs.update(summary_discovery_configs(topics, ctx, device_name))
    return configs


def summary_discovery_configs(topics: Topics, ctx: PublishContext,
                              device_name: str | None = None) -> dict[str, dict[str, Any]]:
    """Sensors on the retained ``summary`` topic: mean faces and each label's share of face-time (%)."""
    mean_topic, *share_topics = topics.discovery_summary
    mean = _common(topics, ctx, device_name, "audience_faces_mean", "Audience faces mean", topics.summary)
    mean.update({"value_template": "{{ value_json.faces.mean }}", "state_class": "measurement",
                 "suggested_display_precision": 1, "icon": "mdi:account-group"})
    configs = {mean_topic: mean}
    for label, topic in zip(LABELS, share_topics, strict=True):
        share = _common(topics, ctx, device_name, f"audience_{label}_share", f"Audience {label} share", topics.summary)
        share.update({"value_template": "{{ (value_json.shares['" + label + "'] * 100) | round(1) }}",
                      "unit_of_measurement": "%", "state_class": "measurement",
                      "suggested_display_precision": 1, "icon": "mdi:chart-donut"})
        configs[topic] = share
    return configs


def discovery_messages(topics: Topics, ctx: PublishContext, device_name: str | None = None) -> list[tuple[str, bytes]]:
    return [(topic, encode(cfg)) for topic, cfg in discovery_configs(topics, ctx, device_name).items()]
