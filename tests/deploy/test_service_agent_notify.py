"""The real `fer-agent run` under a stand-in for systemd: READY/WATCHDOG/STATUS/STOPPING
arrive on a test $NOTIFY_SOCKET in the right order, and `fer-agent health` is
healthy while it runs (what install.sh and push.sh wait for).

This machine's PID 1 is not systemd, so the socket side of systemd is played
by the test: an AF_UNIX datagram socket, as systemd passes it to Type=notify units.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest


@pytest.fixture
def clip(tmp_path: Path) -> Path:
    from agent.synthetic import write_clip

    return write_clip(tmp_path / "clip.mp4", seconds=3.0)


def _drain(sock: socket.socket, until: float, stop) -> list[str]:
    got: list[str] = []
    while time.monotonic() < until:
        sock.settimeout(max(0.05, until - time.monotonic()))
        try:
            got.append(sock.recv(4096).decode())
        except TimeoutError:
            break
        if stop(got):
            break
    return got


@pytest.mark.slow
def test_real_agent_notifies_systemd_in_order_and_is_healthy(tmp_path: Path, clip: Path, mosquitto) -> None:
    notify_path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(notify_path))
    health_file = tmp_path / "run" / "health.json"
    config = tmp_path / "agent.yaml"
    config.write_text(f"""
source: {{uri: {json.dumps(str(clip))}, loop: true, realtime: true}}
backend: {{type: tflite}}
mqtt: {{host: {mosquitto.host}, port: {mosquitto.port}, device_id: notify-test}}
service: {{state_dir: {json.dumps(str(tmp_path / "state"))}, health_file: {json.dumps(str(health_file))},
           health_interval_s: 0.5}}
""")
    env = dict(os.environ, NOTIFY_SOCKET=str(notify_path), WATCHDOG_USEC="1000000", PYTHONUNBUFFERED="1")
    env.pop("WATCHDOG_PID", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "agent.cli", "run", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    messages: list[str] = []
    started = time.monotonic()
    try:
        messages += _drain(sock, time.monotonic() + 90, lambda g: sum(m == "WATCHDOG=1" for m in g) >= 3)
        assert any(m.startswith("READY=1") for m in messages), (messages, proc.poll())
        # what deploy waits for: healthy, broker connected
        deadline = time.monotonic() + 20
        while True:
            r = subprocess.run(
                [sys.executable, "-m", "agent.cli", "health", "--health-file", str(health_file), "--json"],
                check=False,
                capture_output=True,
                text=True,
                timeout=60,
            )
            if r.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert r.returncode == 0, r.stdout + r.stderr
        doc = json.loads(r.stdout)
        assert doc["healthy"] and doc["health"]["broker_connected"] and doc["health"]["frames"] > 0
        proc.send_signal(signal.SIGTERM)
        elapsed = time.monotonic() - started
        out, _ = proc.communicate(timeout=30)
        messages += _drain(sock, time.monotonic() + 2, lambda g: any(m.startswith("STOPPING=1") for m in g))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        sock.close()
    assert proc.returncode == 0, out
    kinds = [m.split("\n")[0].split("=")[0] for m in messages]
    assert kinds[0] == "READY", messages
    assert kinds[-1] == "STOPPING", messages
    assert "WATCHDOG" in kinds[1:-1]
    assert all(k in ("READY", "WATCHDOG", "STATUS", "STOPPING", "EXTEND_TIMEOUT_USEC") for k in kinds), messages
    # READY carries a one-line status; pings are rate-limited to WATCHDOG_USEC/2 (0.5 s), not one per frame
    assert "\nSTATUS=" in messages[0]
    assert kinds.count("WATCHDOG") <= elapsed / 0.5 + 2, (kinds.count("WATCHDOG"), elapsed)
    assert not health_file.exists()  # removed on clean shutdown: health then says "not running"
