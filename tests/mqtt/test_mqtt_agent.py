"""The real agent (``python -m agent.cli run``) on the demo clip, publishing to mosquitto: every payload it
sends validates against the schemas, a kill leaves ``offline`` via the Last Will, a normal end publishes it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jsonschema
import pytest
import yaml

from agent.mqtt.payloads import load_schema

pytest.importorskip("ai_edge_litert")
synthetic = pytest.importorskip("agent.synthetic")
pytest.importorskip("skimage")


def _validator(name: str):
    schema = load_schema(name)
    cls = jsonschema.validators.validator_for(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def _agent(tmp_path: Path, broker, device_id: str, *, loop: bool, update_s: float = 10.0) -> subprocess.Popen:
    clip = tmp_path / "clip.mp4"
    if not clip.exists():
        synthetic.write_clip(clip, seconds=4.0)
    cfg = {
        "source": {"uri": str(clip), "realtime": True, "loop": loop},
        "backend": {"type": "tflite"},
        "tracking": {"update_interval_s": update_s},
        "publish": {"stats_interval_s": 1.0, "state_interval_s": 1.0},
        "mqtt": {"host": broker.host, "port": broker.port, "device_id": device_id,
                 "reconnect": {"min_delay_s": 0.2, "max_delay_s": 1.0}},
        "service": {"state_dir": str(tmp_path / "state"), "health_file": str(tmp_path / "health.json")},
        "log_level": "info",
    }
    path = tmp_path / f"{device_id}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return subprocess.Popen([sys.executable, "-m", "agent.cli", "run", "--config", str(path)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _check_payloads(sub, device_id: str) -> None:
    base = f"fer/{device_id}"
    for topic, schema in ((f"{base}/events", "event"), (f"{base}/state", "state"), (f"{base}/stats", "stats")):
        v = _validator(schema)
        for m in sub.on(topic):
            v.validate(m.json())
    for m in sub.on(f"{base}/status"):
        _validator("status").validate(m.text)


@pytest.mark.slow
def test_real_agent_killed_leaves_last_will(mosquitto, mqtt_collector, tmp_path: Path) -> None:
    sub = mqtt_collector(mosquitto.host, mosquitto.port, "fer/agent-kill/#")
    proc = _agent(tmp_path, mosquitto, "agent-kill", loop=True)
    try:
        sub.wait_count("fer/agent-kill/events", 1, timeout=90)
        sub.wait_count("fer/agent-kill/stats", 1, timeout=30)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        sub.wait_for(lambda c: [m.text for m in c.on("fer/agent-kill/status")][-1:] == ["offline"], timeout=15,
                     what="Last Will")
    finally:
        if proc.poll() is None:
            proc.kill()
        output = proc.communicate()[0]
    assert [m.text for m in sub.on("fer/agent-kill/status")][0] == "online", output
    _check_payloads(sub, "agent-kill")
    assert "Client fer-agent-kill disconnected." not in mosquitto.log_text()


@pytest.mark.slow
def test_real_agent_run_to_the_end_publishes_a_valid_stream_and_offline(mosquitto, mqtt_collector,
                                                                        tmp_path: Path) -> None:
    sub = mqtt_collector(mosquitto.host, mosquitto.port, ["fer/agent-end/#", "homeassistant/#"])
    proc = _agent(tmp_path, mosquitto, "agent-end", loop=False)
    output = proc.communicate(timeout=180)[0]
    assert proc.returncode == 0, output
    sub.wait_for(lambda c: [m.text for m in c.on("fer/agent-end/status")][-1:] == ["offline"], what="offline")
    events = [m.json() for m in sub.on("fer/agent-end/events")]
    assert events, output
    types = [e["type"] for e in events]
    assert types[0] == "appeared" and "left" in types  # the clip's faces come and go
    assert len({e["event_id"] for e in events}) == len(events)
    seqs = [e["seq"] for e in events]
    assert seqs == list(range(seqs[0], seqs[0] + len(events))), "in order, none missing"
    _check_payloads(sub, "agent-end")
    ha = [m for m in sub.on("homeassistant/sensor/fer_agent-end/dominant_emotion/config")]
    assert ha and ha[0].json()["availability_topic"] == "fer/agent-end/status"
    assert "Client fer-agent-end disconnected." in mosquitto.log_text()  # clean shutdown, not the will


@pytest.mark.slow
@pytest.mark.component
def test_real_agent_through_a_ten_second_broker_outage_loses_nothing(mosquitto, mqtt_collector,
                                                                      tmp_path: Path) -> None:
    topic = "fer/agent-outage/events"
    sub = mqtt_collector(mosquitto.host, mosquitto.port, topic, client_id="dash-agent-outage", persistent=True)
    proc = _agent(tmp_path, mosquitto, "agent-outage", loop=True, update_s=0.5)  # a steady flow of 'update's
    try:
        sub.wait_count(topic, 3, timeout=90)
        mosquitto.stop()
        down_at = time.time()
        time.sleep(10)
        up_at = time.time()
        mosquitto.start()
        before = len(sub.on(topic))
        sub.wait_count(topic, before + 5, timeout=60)  # the backlog, then live events again
        proc.send_signal(signal.SIGTERM)
        output = proc.communicate(timeout=60)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, output
    time.sleep(1.0)
    first: dict[str, int] = {}
    for m in sub.on(topic):
        p = m.json()
        first.setdefault(p["event_id"], p["seq"])
    seqs = list(first.values())
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "every event once, in order, no gap"
    assert len(seqs) > before, output
    during = [m.json() for m in sub.on(topic)
              if down_at + 0.5 < _epoch(m.json()["capture_time"]) < up_at - 0.5]
    assert len(during) >= 3, "events captured while the broker was down must arrive afterwards"
    assert "lost connection" in output and "connected to" in output


def _epoch(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
