"""The audience summary: right shares on a scripted clip, valid retained payloads on a real broker, HA sensors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import numpy as np
import pytest
import yaml

from agent.capture import ArraySource, SourceConfig
from agent.config import AgentConfig
from agent.contracts.events import PublishContext
from agent.contracts.labels import LABELS
from agent.contracts.preprocess import Box
from agent.detectors import Detection
from agent.mqtt.config import MqttConfig
from agent.mqtt.discovery import discovery_configs
from agent.mqtt.payloads import load_schema
from agent.mqtt.publisher import MqttPublisher
from agent.mqtt.topics import Topics
from agent.pipeline import NullPublisher
from agent.runner import build_pipeline
from agent.summary import AudienceWindow, SummaryObserver, summary_payload

FPS = 10.0
T0 = 1_800_000_000.0  # a fixed capture-time origin: the test is about media time, not the wall clock
LEFT, RIGHT = Box(40, 100, 160, 160), Box(420, 100, 160, 160)
CTX = PublishContext("scripted", "fer-test", "1.0.0", "fake", "0.1.0")


def _validator(name: str):
    schema = load_schema(name)
    cls = jsonschema.validators.validator_for(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


class Script:
    """Which faces are in frame ``i`` and what each shows: the left face is happy for the whole 20 s,
    the right one is sad from 5 s to 15 s."""

    def __init__(self) -> None:
        self.i = 0

    def faces(self) -> list[tuple[Box, str]]:
        t = self.i / FPS
        out = [(LEFT, "happy")]
        if 5.0 <= t < 15.0:
            out.append((RIGHT, "sad"))
        return out


class ScriptedDetector:
    def __init__(self, script: Script) -> None:
        self.script = script

    def detect(self, image, grey) -> list[Detection]:
        return [Detection(box, 0.99) for box, _ in self.script.faces()]

    def describe(self) -> str:
        return "scripted"

    def close(self) -> None:
        pass


class ScriptedClassifier:
    name = "fake"

    def __init__(self, script: Script) -> None:
        self.script = script

    def infer(self, faces: np.ndarray) -> np.ndarray:
        out = np.full((len(faces), len(LABELS)), 0.01, np.float32)
        for row, (_, label) in enumerate(self.script.faces()):
            out[row, LABELS.index(label)] = 0.94
        return out

    def describe(self) -> str:
        return self.name

    def close(self) -> None:
        pass


def _run_script(manifest, window_s: float, interval_s: float = 5.0, seconds: float = 20.0):
    cfg = AgentConfig()
    cfg.tracking.update_interval_s = 0
    script = Script()
    observer = SummaryObserver(manifest.labels, window_s, interval_s)
    p = build_pipeline(cfg, manifest, ArraySource(SourceConfig(), []), ScriptedDetector(script),
                       ScriptedClassifier(script), NullPublisher(CTX), observers=[observer])
    frame = np.zeros((480, 640, 3), np.uint8)
    for i in range(int(seconds * FPS)):
        script.i = i
        p.process(frame, T0 + i / FPS)
    return p, observer


def test_shares_on_a_scripted_clip_with_known_faces_and_labels(manifest) -> None:
    p, observer = _run_script(manifest, window_s=60.0)
    v = _validator("summary")
    for payload in p.publisher.summaries:
        v.validate(payload)
    assert len(p.publisher.summaries) == 3  # at 5, 10 and 15 s of capture time (every interval_s)
    first = p.publisher.summaries[0]  # 0-5 s: the happy face alone
    assert first["shares"]["happy"] == 1.0 and first["dominant"] == "happy"
    assert first["faces"] == {"mean": pytest.approx(1.0, abs=0.03), "max": 1}
    s = observer.window.summary()  # all 20 s: happy 20 s (less its confirm frame), sad 10 s
    assert s["shares"]["happy"] == pytest.approx(2 / 3, abs=0.01)
    assert s["shares"]["sad"] == pytest.approx(1 / 3, abs=0.01)
    assert sum(s["shares"].values()) == pytest.approx(1.0)
    assert s["face_seconds"] == pytest.approx(30.0, abs=0.3) and s["faces_max"] == 2
    assert s["faces_mean"] == pytest.approx(1.5, abs=0.02)
    assert s["mean_confidence"] == pytest.approx(0.94, abs=0.01) and s["dominant"] == "happy"
    assert s["end"] == pytest.approx(T0 + 19.9) and s["start"] == pytest.approx(T0)


def test_the_window_slides(manifest) -> None:
    _, observer = _run_script(manifest, window_s=10.0)
    s = observer.window.summary()  # 10-20 s: happy 10 s, sad 10-15 s
    assert s["shares"]["happy"] == pytest.approx(2 / 3, abs=0.01)
    assert s["shares"]["sad"] == pytest.approx(1 / 3, abs=0.01)
    assert s["start"] == pytest.approx(T0 + 10.0) and s["observed_s"] == pytest.approx(10.0, abs=0.15)
    _, observer = _run_script(manifest, window_s=4.0, seconds=19.0)  # 15-19 s: the sad face has gone
    s = observer.window.summary()
    assert s["shares"]["sad"] == 0.0 and s["shares"]["happy"] == 1.0 and s["faces_max"] == 1


def test_no_face_gives_zero_shares_and_null_dominant() -> None:
    w = AudienceWindow(LABELS, 60.0)
    for i in range(30):
        w.add(T0 + i / FPS, [])
    s = w.summary()
    assert set(s["shares"].values()) == {0.0} and s["dominant"] is None and s["mean_confidence"] is None
    payload = summary_payload(s, CTX, 60.0)
    _validator("summary").validate(payload)
    assert payload["faces"] == {"mean": 0.0, "max": 0}


def test_a_stalled_source_is_not_credited_and_the_clock_going_back_restarts(manifest) -> None:
    from agent.track import Track

    face = Track(1, (0.1, 0.1, 0.2, 0.2), np.eye(len(LABELS), dtype=np.float32)[3], T0, T0, hits=3,
                 announced=True, label="happy")
    w = AudienceWindow(LABELS, 60.0, max_gap_s=1.0)
    for t in (T0, T0 + 30.0):  # 30 s without a frame counts as 1 s
        face.last_seen = t
        w.add(t, [face])
    assert w.summary()["face_seconds"] == pytest.approx(1.0)
    face.last_seen = T0 - 5
    w.add(T0 - 5, [face])
    assert w.summary()["face_seconds"] == 0.0 and w.summary()["frames"] == 1


def test_home_assistant_summary_sensors_render_on_a_summary_payload() -> None:
    jinja2 = pytest.importorskip("jinja2")
    t = Topics("fer", "rb5")
    configs = discovery_configs(t, CTX)
    v = _validator("ha_sensor")
    w = AudienceWindow(LABELS, 60.0)
    from agent.track import Track

    face = Track(1, (0.1, 0.1, 0.2, 0.2), np.eye(len(LABELS), dtype=np.float32)[3], T0, T0, announced=True,
                 label="happy")
    for i in range(11):
        face.last_seen = T0 + i / FPS
        w.add(face.last_seen, [face])
    payload = json.loads(json.dumps(summary_payload(w.summary(), CTX, 60.0)))
    assert len(t.discovery_summary) == 1 + len(LABELS)
    for topic in t.discovery_summary:
        cfg = configs[topic]
        v.validate(cfg)
        assert cfg["state_topic"] == t.summary and cfg["state_class"] == "measurement"
        assert cfg["availability_topic"] == t.status
    rendered = {topic: jinja2.Environment().from_string(configs[topic]["value_template"]).render(value_json=payload)
                for topic in t.discovery_summary}
    assert rendered[t.discovery("sensor", "audience_happy_share")] == "100.0"
    assert rendered[t.discovery("sensor", "audience_sad_share")] == "0.0"
    assert rendered[t.discovery("sensor", "audience_faces_mean")] == "1.0"
    assert configs[t.discovery("sensor", "audience_happy_share")]["unit_of_measurement"] == "%"


def test_summary_is_retained_and_valid_on_a_real_broker(mosquitto, mqtt_collector, tmp_path: Path) -> None:
    cfg = MqttConfig(host=mosquitto.host, port=mosquitto.port)
    pub = MqttPublisher(cfg, PublishContext("sum", "fer-test", "1.0.0", "fake", "0.1.0"), tmp_path)
    w = AudienceWindow(LABELS, 60.0)
    w.add(T0, [])
    pub.start()
    try:
        early = mqtt_collector(mosquitto.host, mosquitto.port, "fer/sum/summary")
        pub.publish_summary(summary_payload(w.summary(), pub.ctx, 60.0))
        early.wait_count("fer/sum/summary", 1, timeout=15)
        late = mqtt_collector(mosquitto.host, mosquitto.port, "fer/sum/summary")  # joins later: gets it, retained
        m = late.wait_count("fer/sum/summary", 1)[0]
        assert m.retain
        _validator("summary").validate(m.json())
        assert m.json()["device_id"] == "sum"
    finally:
        pub.close()


@pytest.mark.slow
def test_real_agent_publishes_valid_summaries(mosquitto, mqtt_collector, tmp_path: Path) -> None:
    pytest.importorskip("ai_edge_litert")
    demo = pytest.importorskip("agent.demo")
    pytest.importorskip("skimage")
    clip = demo.write_clip(tmp_path / "clip.mp4", seconds=4.0)
    cfg = {"source": {"uri": str(clip), "realtime": True}, "backend": {"type": "tflite"},
           "publish": {"summary_interval_s": 1.0, "summary_window_s": 60.0},
           "mqtt": {"host": mosquitto.host, "port": mosquitto.port, "device_id": "sumagent"},
           "service": {"state_dir": str(tmp_path / "state"), "health_file": str(tmp_path / "health.json")}}
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(cfg))
    sub = mqtt_collector(mosquitto.host, mosquitto.port, "fer/sumagent/#")
    out = subprocess.run([sys.executable, "-m", "agent.cli", "run", "--config", str(path)], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    sub.wait_count("fer/sumagent/summary", 3, timeout=10)
    v = _validator("summary")
    summaries = [m.json() for m in sub.on("fer/sumagent/summary")]
    for s in summaries:
        v.validate(s)
    last = summaries[-1]  # the run's whole clip: the astronaut was in view most of it
    assert sum(last["shares"].values()) == pytest.approx(1.0, abs=1e-3)
    assert last["dominant"] in LABELS and last["faces"]["max"] >= 1 and last["face_seconds"] > 1.0
