"""``fer-agent record`` a real demo run on mosquitto, then ``fer-agent report`` draws it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import pytest

from agent.report import load, shares_per_second

pytest.importorskip("matplotlib")


def _fer_agent(*args: str) -> list[str]:
    return [sys.executable, "-m", "agent.cli", *args]


def _start_recorder(broker, out: Path) -> subprocess.Popen:
    proc = subprocess.Popen(_fer_agent("record", "--broker", f"{broker.host}:{broker.port}", "--device-id", "demo",
                                       "-o", str(out), "--until-offline", "--seconds", "120"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stderr.readline()  # "record: subscribed to ..." once the subscription is in place
    assert line.startswith("record: subscribed to fer/demo/#"), line + proc.stderr.read()
    return proc


@pytest.mark.slow
def test_record_a_real_demo_run_and_draw_it(mosquitto, tmp_path: Path) -> None:
    pytest.importorskip("ai_edge_litert")
    pytest.importorskip("skimage")
    recording, png = tmp_path / "events.jsonl", tmp_path / "run.png"
    recorder = _start_recorder(mosquitto, recording)
    try:
        demo = subprocess.run(_fer_agent("demo", "--broker", f"{mosquitto.host}:{mosquitto.port}", "--seconds", "4"),
                              capture_output=True, text=True, timeout=180)
        assert demo.returncode == 0, demo.stderr
        assert recorder.wait(30) == 0  # it stopped by itself on the agent's offline
    finally:
        if recorder.poll() is None:
            recorder.kill()
            recorder.wait(10)
    lines = [json.loads(x) for x in recording.read_text().splitlines()]
    topics = {x["topic"] for x in lines}
    assert {"fer/demo/events", "fer/demo/state", "fer/demo/status", "fer/demo/summary"} <= topics
    printed = [x for x in demo.stdout.splitlines() if x.startswith("fer/demo/events ")]
    recorded = [x for x in lines if x["topic"] == "fer/demo/events"]
    assert len(recorded) == len(printed) > 0  # every event the demo's own subscriber saw
    assert lines[-1]["payload"] == "offline" and lines[-1]["retained"] is False

    run = load(recording)
    assert run.bands and {b.face_id for b in run.bands} == {e["payload"]["face_id"] for e in recorded}
    _, shares = shares_per_second(run)
    assert all(abs(row.sum() - 1.0) < 1e-9 or row.sum() == 0 for row in shares)
    r = subprocess.run(_fer_agent("report", str(recording), "-o", str(png)), capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert "face(s)" in r.stdout
    image = cv2.imread(str(png))
    assert image is not None and image.shape[1] == 1000 and image.shape[0] > 500
    assert len({tuple(p) for p in image.reshape(-1, 3)[::97]}) > 5  # not a blank canvas


def test_report_names_the_bad_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"topic": "fer/x/events", "payload": {}}\nnot json\n')
    r = subprocess.run(_fer_agent("report", str(bad), "-o", str(tmp_path / "x.png")), capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 2 and f"{bad}:2: not a line written by fer-agent record" in r.stderr
    assert "Traceback" not in r.stderr


def test_record_unreachable_broker_is_one_line(tmp_path: Path) -> None:
    from conftest import free_port

    r = subprocess.run(_fer_agent("record", "--broker", f"127.0.0.1:{free_port()}", "-o", str(tmp_path / "x.jsonl")),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "cannot connect to 127.0.0.1:" in r.stderr and "Traceback" not in r.stderr
