"""End to end: generated clip of real faces -> agent -> real mosquitto -> paho subscriber.

Also the CLI paths a person uses: ``fer-agent run`` stopped by SIGTERM and ``fer-agent demo``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from agent.config import AgentConfig, apply_overrides
from agent.mqtt.payloads import load_schema
from agent.runner import run_agent
from agent.synthetic import write_clip

DEVICE = "e2e-test"


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return write_clip(tmp_path_factory.mktemp("clip") / "astronaut.mp4", seconds=6.0)


def agent_config(tmp_path: Path, clip: Path, broker) -> AgentConfig:
    cfg = apply_overrides(AgentConfig(), source=str(clip), backend="tflite", broker=f"{broker.host}:{broker.port}")
    cfg.mqtt.device_id = DEVICE
    cfg.service.state_dir = str(tmp_path / "state")
    cfg.service.health_file = str(tmp_path / "health.json")
    return cfg


def test_clip_to_mosquitto_to_subscriber(tmp_path, clip, mosquitto, mqtt_collector):
    collector = mqtt_collector(mosquitto.host, mosquitto.port, f"fer/{DEVICE}/#")
    summary = run_agent(agent_config(tmp_path, clip, mosquitto))
    assert summary.frames == 90 and summary.failed_inferences == 0
    events = collector.wait_count(f"fer/{DEVICE}/events", summary.events, timeout=15)
    payloads = [m.json() for m in events]
    schema = load_schema("event")
    for p in payloads:
        jsonschema.validate(p, schema)
        assert p["device_id"] == DEVICE and p["backend"] == "tflite"
    by_face: dict[int, list[str]] = {}
    for p in payloads:
        by_face.setdefault(p["face_id"], []).append(p["type"])
    # two astronauts: each appears once and leaves once, ids are stable in between
    assert sorted(by_face) == [1, 2]
    for types in by_face.values():
        assert types[0] == "appeared" and types[-1] == "left" and types.count("appeared") == 1
    # sparse: a handful of events for 90 frames, not one per frame per face
    assert len(payloads) <= 12
    states = collector.on(f"fer/{DEVICE}/state")
    assert states, "no state message"
    for m in states:
        jsonschema.validate(m.json(), load_schema("state"))
    assert states[-1].json()["faces"] == []  # final state after both left
    stats = collector.on(f"fer/{DEVICE}/stats")
    assert stats and stats[-1].json()["frames"] == 90


def test_the_smiling_astronaut_is_happy(tmp_path, clip, mosquitto, mqtt_collector):
    """The issue's acceptance check, on the trained model in the default bundle."""
    collector = mqtt_collector(mosquitto.host, mosquitto.port, f"fer/{DEVICE}/events")
    summary = run_agent(agent_config(tmp_path, clip, mosquitto))
    events = [m.json() for m in collector.wait_count(f"fer/{DEVICE}/events", summary.events, timeout=15)]
    first = [e for e in events if e["type"] == "appeared"]
    assert [e["label"] for e in first] == ["happy", "happy"], [(e["label"], e["probabilities"]) for e in first]
    assert all(e["label"] == "happy" for e in events), [(e["type"], e["label"]) for e in events]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def test_sigterm_publishes_final_state_and_exits_0(tmp_path, clip, mosquitto, mqtt_collector):
    config = tmp_path / "agent.yaml"
    config.write_text(f"""
source: {{uri: {json.dumps(str(clip))}, loop: true, realtime: true}}
backend: {{type: tflite}}
mqtt: {{host: {mosquitto.host}, port: {mosquitto.port}, device_id: {DEVICE}}}
service: {{state_dir: {json.dumps(str(tmp_path / "state"))}, health_file: {json.dumps(str(tmp_path / "health.json"))}}}
""")
    collector = mqtt_collector(mosquitto.host, mosquitto.port, f"fer/{DEVICE}/#")
    proc = subprocess.Popen(
        [sys.executable, "-m", "agent.cli", "run", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=_env(),
    )
    try:
        collector.wait_count(f"fer/{DEVICE}/events", 1, timeout=60)
        assert (tmp_path / "health.json").exists()
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    assert "SIGTERM received" in out
    collector.wait_for(
        lambda c: any(m.text == "offline" or '"offline"' in m.text for m in c.on(f"fer/{DEVICE}/status")),
        timeout=10,
        what="offline status",
    )
    events = [m.json() for m in collector.on(f"fer/{DEVICE}/events")]
    appeared = {e["face_id"] for e in events if e["type"] == "appeared"}
    left = {e["face_id"] for e in events if e["type"] == "left"}
    assert appeared and appeared == left  # every face on screen at shutdown was reported leaving
    assert collector.on(f"fer/{DEVICE}/state")[-1].json()["faces"] == []
    assert not (tmp_path / "health.json").exists()


@pytest.mark.slow
def test_demo_command_prints_events_and_ends_by_itself():
    proc = subprocess.run(
        [sys.executable, "-m", "agent.cli", "demo", "--seconds", "3"],
        capture_output=True,
        text=True,
        timeout=120,
        env=_env(),
    )
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stdout.splitlines() if line.startswith("fer/")]
    assert lines, proc.stdout
    topic, _, payload = lines[0].partition(" ")
    assert topic == "fer/demo/events"
    event = json.loads(payload)
    jsonschema.validate(event, load_schema("event"))
    assert event["type"] == "appeared"
    assert "events published" in proc.stdout.splitlines()[-1]
