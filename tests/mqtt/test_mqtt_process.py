"""Process-level behaviour with a real publisher process (``python -m agent.emit``) and mosquitto:
Last Will on kill, clean offline on SIGTERM, nothing lost across a 10 s broker outage, even when the
agent restarts during the outage, and no accepted event lost to kill -9 at random moments."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import Mosquitto


def spawn(broker: Mosquitto, *args: str, device_id: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "agent.emit", "--broker", f"{broker.host}:{broker.port}",
           "--device-id", device_id, "--log-level", "info", *args]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def read_until(proc: subprocess.Popen, key: str, timeout: float = 20.0) -> dict:
    """Next stdout JSON line that has ``key`` (the emitter reports progress one object per line)."""
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise AssertionError(f"emitter exited ({proc.wait()}) before reporting {key!r}: {proc.stderr.read()}")
        msg = json.loads(line)
        if key in msg:
            return msg
    raise AssertionError(f"no {key!r} from the emitter within {timeout} s")


def finish(proc: subprocess.Popen, timeout: float = 60.0) -> str:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, f"emitter failed ({proc.returncode}): {err}"
    return out + err


def frames_in_order(collector, topic: str) -> list[int]:
    """Frames of the de-duplicated events, in the order their first copy arrived."""
    first: dict[str, int] = {}
    for m in collector.on(topic):
        p = m.json()
        first.setdefault(p["event_id"], p["frame"])
    return list(first.values())


def test_killed_agent_leaves_offline_via_last_will(mosquitto, mqtt_collector) -> None:
    sub = mqtt_collector(mosquitto.host, mosquitto.port, "fer/killme/status")
    proc = spawn(mosquitto, "--events", "0", "--hold", "--wait-connected", "10", device_id="killme")
    try:
        read_until(proc, "connected")
        sub.wait_for(lambda c: [m.text for m in c.on("fer/killme/status")][-1:] == ["online"], what="online")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        sub.wait_for(lambda c: [m.text for m in c.on("fer/killme/status")][-1:] == ["offline"], what="Last Will")
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
    log = mosquitto.log_text()
    assert "Client fer-killme disconnected." not in log  # no clean DISCONNECT: the broker sent the will
    assert "fer-killme closed its connection" in log or "Socket error on client fer-killme" in log


def test_sigterm_publishes_offline_cleanly(mosquitto, mqtt_collector) -> None:
    sub = mqtt_collector(mosquitto.host, mosquitto.port, "fer/termme/#")
    proc = spawn(mosquitto, "--events", "5", "--rate", "0", "--hold", "--wait-connected", "10", device_id="termme")
    read_until(proc, "emitted")
    sub.wait_count("fer/termme/events", 5)
    proc.send_signal(signal.SIGTERM)
    out = finish(proc)
    assert '"closed": true' in out
    sub.wait_for(lambda c: [m.text for m in c.on("fer/termme/status")][-1:] == ["offline"], what="offline")
    assert "Client fer-termme disconnected." in mosquitto.log_text()  # clean DISCONNECT after our own offline


@pytest.mark.slow
@pytest.mark.component
def test_ten_second_outage_mid_run_loses_nothing(mosquitto, mqtt_collector, tmp_path: Path) -> None:
    topic = "fer/outage/events"
    sub = mqtt_collector(mosquitto.host, mosquitto.port, topic, client_id="dash-outage", persistent=True)
    proc = spawn(mosquitto, "--events", "400", "--rate", "25", "--state-every", "10", "--linger", "30",
                 "--state-dir", str(tmp_path / "state"), "--wait-connected", "10", device_id="outage")
    try:
        read_until(proc, "connected")
        sub.wait_count(topic, 25, timeout=10)  # about a second of events, live
        mosquitto.stop()
        time.sleep(10)
        mosquitto.start()
        out = finish(proc, timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert '"outbox_depth": 0' in out and '"dropped": 0' in out
    sub.wait_for(lambda c: len(frames_in_order(c, topic)) >= 400, timeout=30, what="all 400 events")
    assert frames_in_order(sub, topic) == list(range(400)), "every event, in order, no id missing"
    seqs = sorted({m.json()["seq"] for m in sub.on(topic)})
    assert seqs == list(range(seqs[0], seqs[0] + 400))


@pytest.mark.slow
@pytest.mark.component
def test_agent_restart_during_outage_loses_nothing(mosquitto, mqtt_collector, tmp_path: Path) -> None:
    topic = "fer/restart/events"
    state = str(tmp_path / "state")
    sub = mqtt_collector(mosquitto.host, mosquitto.port, topic, client_id="dash-restart", persistent=True)
    first = spawn(mosquitto, "--events", "100", "--rate", "50", "--state-dir", state, "--wait-connected", "10",
                  device_id="restart")
    read_until(first, "connected")
    sub.wait_count(topic, 10, timeout=10)
    mosquitto.stop()
    out1 = finish(first)  # keeps emitting during the outage, then exits with the rest queued on disk
    outage_started = time.monotonic()
    assert '"outbox_depth": 0' not in out1, "the outage should have left events queued"
    second = spawn(mosquitto, "--events", "100", "--first-frame", "100", "--rate", "50", "--linger", "30",
                   "--state-dir", state, device_id="restart")
    try:
        read_until(second, "started")
        time.sleep(max(0.0, 10 - (time.monotonic() - outage_started)))
        mosquitto.start()
        out2 = finish(second, timeout=90)
    finally:
        if second.poll() is None:
            second.kill()
    assert '"outbox_depth": 0' in out2
    sub.wait_for(lambda c: len(frames_in_order(c, topic)) >= 200, timeout=30, what="all 200 events")
    assert frames_in_order(sub, topic) == list(range(200))


def _accepted(path: Path) -> list[int]:
    """Frames the emitter said publish_event had accepted (a line cut short by the kill is not one)."""
    frames = []
    for line in path.read_text().splitlines(keepends=True):
        if line.endswith("\n") and '"accepted"' in line:
            frames.append(json.loads(line)["accepted"])
    return frames


@pytest.mark.slow
def test_every_accepted_event_survives_kill_9_at_random_points(mosquitto, mqtt_collector, tmp_path: Path) -> None:
    """publish_event journals the event before it returns: SIGKILL at any moment (before the connection, while
    a restart recovers the journal, mid-flood) loses no accepted event, and none is put in the outbox twice."""
    seed = int(time.time())
    rng = random.Random(seed)
    topic = "fer/kill9/events"
    sub = mqtt_collector(mosquitto.host, mosquitto.port, topic)
    state = str(tmp_path / "state")
    accepted: list[int] = []
    first = 0
    run = 0
    while run < 5 or (len(accepted) <= 500 and run < 15):  # at least five kills; more if they came early
        out = tmp_path / f"run{run}.jsonl"
        run += 1
        with out.open("w") as fh:
            proc = subprocess.Popen(
                [sys.executable, "-m", "agent.emit", "--broker", f"{mosquitto.host}:{mosquitto.port}",
                 "--device-id", "kill9", "--state-dir", state, "--events", "100000", "--first-frame", str(first),
                 "--rate", "400", "--print-accepted"], stdout=fh, stderr=subprocess.DEVNULL)
            started = time.monotonic()
            while "started" not in out.read_text() and proc.poll() is None and time.monotonic() - started < 20:
                time.sleep(0.01)
            time.sleep(rng.uniform(0.0, 0.8))  # run 0 may die before connecting, a later one while recovering
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
        accepted += _accepted(out)
        # Frame numbers never repeat across runs: the kill can fall after publish_event accepted an event and
        # before its "accepted" line was written, so the next run cannot start after the last line it saw.
        first += 100000
    assert len(accepted) > 500, f"too few events accepted to mean anything (seed {seed})"
    final = subprocess.Popen([sys.executable, "-m", "agent.emit", "--broker", f"{mosquitto.host}:{mosquitto.port}",
                              "--device-id", "kill9", "--state-dir", state, "--events", "0", "--linger", "30",
                              "--wait-connected", "10", "--log-level", "info"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out = finish(final)
    assert '"outbox_depth": 0' in out, out
    want = set(accepted)

    def delivered() -> dict[int, set[str]]:
        ids: dict[int, set[str]] = {}
        for m in sub.on(topic):
            p = m.json()
            ids.setdefault(p["frame"], set()).add(p["event_id"])
        return ids

    def seqs_of_each_event() -> dict[str, set[int]]:
        seqs: dict[str, set[int]] = {}
        for m in sub.on(topic):
            p = m.json()
            seqs.setdefault(p["event_id"], set()).add(p["seq"])
        return seqs

    try:
        sub.wait_for(lambda c: want <= set(delivered()), timeout=30, what="every accepted event")
    except AssertionError:
        pass
    missing = sorted(want - set(delivered()))
    assert not missing, f"{len(missing)} of {len(want)} accepted events lost (seed {seed}), e.g. {missing[:5]}"
    twice = {f: ids for f, ids in delivered().items() if len(ids) > 1}
    assert not twice, f"one frame's event accepted twice (seed {seed}): {twice}"
    requeued = {e: s for e, s in seqs_of_each_event().items() if len(s) > 1}  # a redelivery keeps its seq
    assert not requeued, f"events put in the outbox twice (seed {seed}): {requeued}"
    seqs = sorted({m.json()["seq"] for m in sub.on(topic)})
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), f"a gap in seq means a lost event (seed {seed})"
