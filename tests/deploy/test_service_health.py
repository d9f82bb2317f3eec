"""sd_notify protocol, watchdog rate limiting and health-file states.

Code: agent/notify.py, agent/health.py, agent/service.py.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from agent import health, service
from agent.health import HealthReporter, check_health
from agent.notify import Notifier
from agent.service import ServiceConfig


class FakeClock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def _recv_all(sock: socket.socket) -> list[str]:
    out = []
    sock.setblocking(False)
    while True:
        try:
            out.append(sock.recv(4096).decode())
        except BlockingIOError:
            return out


@pytest.fixture
def notify_socket(tmp_path: Path):
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    yield str(path), sock
    sock.close()


def test_notify_messages_in_order(notify_socket) -> None:
    path, sock = notify_socket
    clock = FakeClock()
    n = Notifier(env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "10000000"}, clock=clock)
    assert n.enabled and n.watchdog_interval_s == 5.0
    n.ready("model loaded,\nsource opened")
    clock.t += 5.0
    n.watchdog()
    n.status("12.0 fps, 2 faces")
    n.stopping()
    msgs = _recv_all(sock)
    assert msgs == [
        "READY=1\nSTATUS=model loaded, source opened",
        "WATCHDOG=1",
        "STATUS=12.0 fps, 2 faces",
        "STOPPING=1",
    ]


def test_watchdog_rate_limited_to_half_the_timeout(notify_socket) -> None:
    path, sock = notify_socket
    clock = FakeClock()
    n = Notifier(env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "2000000"}, clock=clock)  # 2 s -> every 1 s
    sent = []
    for _ in range(250):  # 25 fps for 10 s
        sent.append(n.watchdog())
        clock.t += 0.04
    assert sum(sent) == 10
    assert _recv_all(sock) == ["WATCHDOG=1"] * 10


def test_watchdog_off_without_watchdog_usec_or_for_other_pid(notify_socket) -> None:
    path, sock = notify_socket
    assert Notifier(env={"NOTIFY_SOCKET": path}).watchdog() is False
    other = Notifier(env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": str(os.getpid() + 1)})
    assert other.watchdog() is False
    mine = Notifier(env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": str(os.getpid())})
    assert mine.watchdog() is True
    assert _recv_all(sock) == ["WATCHDOG=1"]


def test_abstract_namespace_socket() -> None:
    name = f"fer-agent-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    try:
        n = Notifier(env={"NOTIFY_SOCKET": "@" + name})
        assert n.ready("ok")
        assert _recv_all(sock) == ["READY=1\nSTATUS=ok"]
    finally:
        sock.close()


def test_noop_without_notify_socket() -> None:
    n = Notifier(env={})
    assert not n.enabled
    assert n.ready("x") is False and n.watchdog() is False and n.status("x") is False and n.stopping() is False


def test_send_failure_is_swallowed(tmp_path: Path) -> None:
    n = Notifier(env={"NOTIFY_SOCKET": str(tmp_path / "gone.sock")})
    assert n.enabled
    assert n.ready("x") is False  # nobody listening: logged, not raised


# --------------------------------------------------------------------------- health


def _reporter(tmp_path: Path, wall: FakeClock, mono: FakeClock, **kw) -> HealthReporter:
    return HealthReporter(tmp_path / "run" / "health.json", wall_clock=wall, clock=mono, **kw)


def test_missing_file(tmp_path: Path) -> None:
    ok, why = check_health(tmp_path / "nope.json", 30)
    assert not ok and why == f"agent not running or health file missing: {tmp_path / 'nope.json'}"


def test_malformed_file(tmp_path: Path) -> None:
    p = tmp_path / "h.json"
    p.write_text("{not json")
    ok, why = check_health(p, 30)
    assert not ok and "malformed" in why and str(p) in why


def test_healthy_then_stale_frames(tmp_path: Path) -> None:
    wall, mono = FakeClock(1_700_000_000.0), FakeClock(50.0)
    r = _reporter(tmp_path, wall, mono)
    assert r.update(wall.t, 100, True, 0, "tflite", "running")
    ok, msg = check_health(r.path, 30, now=wall.t + 1)
    assert ok and "100 frames" in msg and "broker connected" in msg and "tflite" in msg
    ok, why = check_health(r.path, 30, now=wall.t + 45)
    assert not ok and why.startswith("no frames for 45 s")


def test_no_frame_yet(tmp_path: Path) -> None:
    wall, mono = FakeClock(1_700_000_000.0), FakeClock(50.0)
    r = _reporter(tmp_path, wall, mono)
    r.update(0.0, 0, True, 0, "snpe", "opening camera")
    ok, why = check_health(r.path, 30, now=wall.t + 1)
    assert not ok and why.startswith("no frame processed yet")


def test_writes_are_rate_limited_and_atomic(tmp_path: Path) -> None:
    wall, mono = FakeClock(1_700_000_000.0), FakeClock(50.0)
    r = _reporter(tmp_path, wall, mono, interval_s=2.0)
    for i in range(100):  # 25 fps for 4 s
        r.update(wall.t, i, True, 0, "tflite", "running")
        wall.t += 0.04
        mono.t += 0.04
    assert r.writes == 2
    assert [p.name for p in r.path.parent.iterdir()] == ["health.json"]  # no temp files left
    data = json.loads(r.path.read_text())
    assert data["frames"] in (50, 51) and data["fps"] == pytest.approx(25.0, rel=0.03)  # float steps


def test_broker_change_forces_a_write(tmp_path: Path) -> None:
    wall, mono = FakeClock(1_700_000_000.0), FakeClock(50.0)
    r = _reporter(tmp_path, wall, mono, interval_s=60.0)
    assert r.update(wall.t, 1, True, 0, "tflite", "running")
    mono.t += 0.1
    assert not r.update(wall.t, 2, True, 0, "tflite", "running")
    assert not r.update(wall.t, 3, False, 0, "tflite", "running")  # within MIN_GAP_S of the last write
    mono.t += 0.5
    assert r.update(wall.t, 4, False, 0, "tflite", "running")  # long before interval_s
    assert json.loads(r.path.read_text())["broker_connected"] is False


def test_status_flipping_every_frame_is_still_rate_limited(tmp_path: Path) -> None:
    wall, mono = FakeClock(1_700_000_000.0), FakeClock(50.0)
    r = _reporter(tmp_path, wall, mono, interval_s=2.0)
    for i in range(100):  # 25 calls/s for 4 s, status alternating like frame / idle
        r.update(wall.t, i, True, 0, "tflite", "running" if i % 2 else "waiting for frames")
        wall.t += 0.04
        mono.t += 0.04
    assert 4 <= r.writes <= 9  # every MIN_GAP_S (0.5 s), not every call


def test_broker_down_within_grace_is_healthy_then_growing_outbox_is_not(tmp_path: Path) -> None:
    wall, mono = FakeClock(1_700_000_000.0), FakeClock(50.0)
    r = _reporter(tmp_path, wall, mono, interval_s=1.0, broker_grace_s=60.0)
    r.update(wall.t, 1, True, 0, "tflite", "running")
    wall.t += 1
    mono.t += 1
    r.update(wall.t, 2, False, 0, "tflite", "running")  # broker lost
    ok, msg = check_health(r.path, 30, now=wall.t + 10)
    assert ok and "reconnecting" in msg
    for depth in range(1, 120):  # 2 minutes, one queued event a second
        wall.t += 1
        mono.t += 1
        r.update(wall.t, 2 + depth, False, depth, "tflite", "running")
    ok, why = check_health(r.path, 30, now=wall.t)
    assert not ok and why.startswith("broker disconnected for 119 s, outbox growing (depth 119)"), why


def test_outbox_draining_is_healthy(tmp_path: Path) -> None:
    wall, mono = FakeClock(1_700_000_000.0), FakeClock(50.0)
    r = _reporter(tmp_path, wall, mono, interval_s=1.0, broker_grace_s=10.0)
    r.update(wall.t, 1, False, 50, "tflite", "running")
    for depth in (40, 30, 20):
        wall.t += 5
        mono.t += 5
        r.update(wall.t, 2, False, depth, "tflite", "running")
    ok, msg = check_health(r.path, 30, now=wall.t)
    assert ok and "draining" in msg


def test_monotonic_frame_time_is_converted(tmp_path: Path) -> None:
    wall, mono = FakeClock(1_700_000_000.0), FakeClock(50.0)
    r = _reporter(tmp_path, wall, mono)
    r.update(mono.t - 2.0, 5, True, 0, "tflite", "running")  # agent passed time.monotonic()
    data = json.loads(r.path.read_text())
    assert data["last_frame_time"] == pytest.approx(wall.t - 2.0)


def test_close_removes_file(tmp_path: Path) -> None:
    r = HealthReporter(tmp_path / "h.json")
    r.update(1_700_000_000.0, 1, True, 0, "tflite", "running")
    assert r.path.exists()
    r.close()
    assert not r.path.exists()


def test_write_error_is_not_raised(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    r = HealthReporter(blocker / "health.json")  # parent is a file
    assert r.update(1_700_000_000.0, 1, True, 0, "tflite", "running") is False


# --------------------------------------------------------------------------- paths and command


def test_resolve_health_file_order(tmp_path: Path) -> None:
    absent = tmp_path / "absent"
    kw = {"system_runtime_dir": absent / "run", "system_config": absent / "etc" / "agent.yaml"}
    cfg = ServiceConfig(health_file=str(tmp_path / "x.json"))
    assert service.resolve_health_file(cfg, {"RUNTIME_DIRECTORY": "/r"}, **kw) == tmp_path / "x.json"
    assert service.resolve_health_file(None, {"RUNTIME_DIRECTORY": "/run/fer-agent:/run/other"}, **kw) == Path(
        "/run/fer-agent/health.json"
    )
    assert service.resolve_health_file(None, {"XDG_RUNTIME_DIR": "/run/user/7"}, **kw) == Path(
        "/run/user/7/fer-agent/health.json"
    )
    # installed board, person's shell: same file as the service's $RUNTIME_DIRECTORY
    installed = tmp_path / "run" / "fer-agent"
    installed.mkdir(parents=True)
    got = service.resolve_health_file(
        None, {"XDG_RUNTIME_DIR": "/run/user/1000"}, system_runtime_dir=installed, system_config=absent / "agent.yaml"
    )
    assert got == installed / "health.json"


def test_service_config_validation() -> None:
    """The ranges live in the fields' metadata: a bad value in the file is one error naming the key."""
    from agent.config import parse_config
    from agent.contracts.errors import ConfigError

    with pytest.raises(ConfigError, match=r"service.health_max_age_s: 0.0 is below the minimum 0.1"):
        parse_config({"service": {"health_max_age_s": 0}})
    with pytest.raises(ConfigError, match=r"service.broker_grace_s: expected a number, got 'soon'"):
        parse_config({"service": {"broker_grace_s": "soon"}})


def _args(**kw) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    health.add_health_arguments(parser)
    argv = []
    for k, v in kw.items():
        flag = "--" + k.replace("_", "-")
        argv += [flag] if v is True else [flag, str(v)]
    return parser.parse_args(argv)


def test_health_command_exit_codes(tmp_path: Path, capsys) -> None:
    p = tmp_path / "h.json"
    assert health.health_command(_args(health_file=p)) == 1
    assert capsys.readouterr().out.startswith("unhealthy: agent not running or health file missing")
    r = HealthReporter(p)
    import time

    r.update(time.time(), 3, True, 0, "tflite", "running")
    assert health.health_command(_args(health_file=p)) == 0
    assert capsys.readouterr().out.startswith("healthy: 3 frames")
    assert health.health_command(_args(health_file=p, json=True)) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["healthy"] is True and doc["health"]["frames"] == 3 and doc["health_file"] == str(p)


def test_health_command_reads_config(tmp_path: Path, capsys) -> None:
    import time

    p = tmp_path / "custom.json"
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(f"service:\n  health_file: {p}\n  health_max_age_s: 5\n")
    r = HealthReporter(p)
    r.update(time.time() - 10, 3, True, 0, "tflite", "running")
    assert health.health_command(_args(config=cfg)) == 1
    assert "no frames for 10 s (limit 5 s)" in capsys.readouterr().out
    assert health.health_command(_args(config=cfg, max_age=60)) == 0


def test_health_command_bad_config_is_one_line(tmp_path: Path, capsys) -> None:
    cfg = tmp_path / "agent.yaml"
    cfg.write_text("service:\n  helth_file: /x\n")
    assert health.main(["-c", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "helth_file" in err and str(cfg) in err and "Traceback" not in err
    assert err.startswith("fer-agent health: error: ") and len(err.strip().splitlines()) == 1


def _child_health_file(tmp_path: Path) -> tuple[Path, Any]:
    """A health file written by another live process (the agent stand-in), which the test then kills."""
    import subprocess
    import sys

    p = tmp_path / "health.json"
    code = (
        "import sys, time; from agent.health import HealthReporter; "
        "HealthReporter(sys.argv[1]).update(time.time(), 93, True, 0, 'tflite', 'running'); "
        "print('ready', flush=True); time.sleep(60)"
    )
    child = subprocess.Popen([sys.executable, "-c", code, str(p)], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "ready"
    return p, child


def test_killed_agent_is_unhealthy_at_once(tmp_path: Path, capsys) -> None:
    import signal

    p, child = _child_health_file(tmp_path)
    try:
        assert health.health_command(_args(health_file=p)) == 0
        assert capsys.readouterr().out.startswith("healthy: 93 frames")
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert health.health_command(_args(health_file=p)) == 1
    assert capsys.readouterr().out.strip() == f"unhealthy: agent process {child.pid} is not running"


def test_a_reused_pid_is_not_the_agent(tmp_path: Path) -> None:
    """Same pid, other start time (the pid was reused after the agent died): unhealthy."""
    import time

    p = tmp_path / "health.json"
    HealthReporter(p).update(time.time(), 5, True, 0, "tflite", "running")
    doc = json.loads(p.read_text())
    assert doc["pid"] == os.getpid() and doc["pid_start"] == health.process_start(os.getpid())
    assert check_health(p, 30)[0]
    doc["pid_start"] += 1
    p.write_text(json.dumps(doc))
    ok, why = check_health(p, 30)
    assert not ok and why == f"agent process {os.getpid()} is not running (the pid now belongs to another process)"


def test_fer_agent_health_cli_end_to_end(tmp_path: Path) -> None:
    """The installed `fer-agent health` (agent/cli.py wiring) exits 1 with the reason, then 0."""
    import subprocess
    import sys
    import time

    exe = Path(sys.executable).with_name("fer-agent")
    if not exe.exists():
        pytest.skip("fer-agent console script not installed (pip install -e .)")
    p = tmp_path / "health.json"
    r = subprocess.run(
        [str(exe), "health", "--health-file", str(p)], check=False, capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 1 and r.stdout.strip() == f"unhealthy: agent not running or health file missing: {p}"
    HealthReporter(p).update(time.time(), 42, True, 0, "tflite", "running")
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(f"service:\n  health_file: {p}\n")
    r = subprocess.run(
        [str(exe), "health", "-c", str(cfg), "--json"], check=False, capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert json.loads(r.stdout)["health"]["frames"] == 42


def test_degraded_is_exit_0_with_the_problem_first_and_clears_when_it_ends(tmp_path: Path, capsys) -> None:
    from agent.cli import main

    r = HealthReporter(tmp_path / "health.json", interval_s=0.0)
    problem = "cannot write the outbox in /var/lib/fer-agent: No space left on device (ENOSPC) since T; 5 held"
    r.update(time.time(), 10, True, 5, "tflite", "running", [problem])
    assert main(["health", "--health-file", str(r.path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"degraded: {problem} (10 frames"), out
    assert main(["health", "--health-file", str(r.path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["degraded"] is True
    time.sleep(HealthReporter.MIN_GAP_S)
    r.update(time.time(), 11, True, 0, "tflite", "running", [])
    assert main(["health", "--health-file", str(r.path)]) == 0
    assert capsys.readouterr().out.startswith("healthy: 11 frames")
