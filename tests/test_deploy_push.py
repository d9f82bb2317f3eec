"""deploy/push.sh against fake ssh/adb that run the 'remote' commands locally
into a throwaway root (never a real board), plus a real mosquitto broker on
loopback for the status=online wait."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from test_deploy_support import DEPLOY, REPO, build_fake_wheel, make_sandbox

PUSH = DEPLOY / "push.sh"


def _bundle(tmp: Path) -> Path:
    b = tmp / "bundle"
    b.mkdir()
    (b / "manifest.json").write_text('{"model_name": "fake", "files": {"dlc": {"path": "model.dlc"}}}\n')
    (b / "model.dlc").write_bytes(b"dlc")
    return b


def _push_args(tmp: Path, sb, wheel: Path, *extra: str) -> list[str]:
    wheelhouse = tmp / "wheelhouse"
    wheelhouse.mkdir(exist_ok=True)
    return ["--bundle", str(_bundle(tmp)) if not (tmp / "bundle").exists() else str(tmp / "bundle"),
            "--wheel", str(wheel), "--wheelhouse", str(wheelhouse),
            "--remote-dir", str(tmp / "remote-payload"),
            "--remote-cli", str(sb.path("/opt/fer-agent/current/venv/bin/fer-agent")),
            "--health-timeout", "5", "--online-timeout", "5", *extra]


@pytest.mark.slow
def test_push_over_ssh_installs_waits_and_is_repeatable(tmp_path: Path) -> None:
    sb = make_sandbox(tmp_path)
    wheel = build_fake_wheel(tmp_path / "w", "1.0", healthy=True)
    args = _push_args(tmp_path, sb, wheel)
    r = sb.run(PUSH, "--ssh", "installer@board1", *args, SSH=str(sb.bin / "ssh"), PYTHON=sys.executable)
    assert "board: Python" in r.stderr and "healthy: fake 1.0 100 frames" in r.stderr
    calls = sb.calls()
    ssh_calls = [c for c in calls if c.startswith("ssh installer@board1 ")]
    assert any("tar -xf - -C" in c for c in ssh_calls)
    assert any("install.sh' --payload" in c and "--health-timeout 5" in c for c in ssh_calls)
    current = os.readlink(sb.path("/opt/fer-agent/current"))
    release = current.split("/")[-1]
    assert release.startswith("1.0-") and len(release) == len("1.0-") + 8
    assert (sb.path(f"/opt/fer-agent/releases/{release}/bundle/model.dlc")).read_bytes() == b"dlc"
    assert not (tmp_path / "remote-payload").exists()  # cleaned up on the board

    # same build again: same release id, install.sh changes nothing
    sb.clear_calls()
    again = sb.run(PUSH, "--ssh", "installer@board1", *args, SSH=str(sb.bin / "ssh"), PYTHON=sys.executable)
    assert "nothing changed" in again.stderr
    assert f"runs release {release}" in again.stderr
    assert not any("systemctl restart" in c for c in sb.calls())


@pytest.mark.slow
def test_push_over_adb_reports_unhealthy_first_install(tmp_path: Path) -> None:
    sb = make_sandbox(tmp_path)
    wheel = build_fake_wheel(tmp_path / "w", "0.5", healthy=False)
    r = sb.run(PUSH, "--adb", "SER123", *_push_args(tmp_path, sb, wheel, "--health-timeout", "1"),
               check=False, ADB=str(sb.bin / "adb"), PYTHON=sys.executable)
    assert r.returncode == 4, r.stderr
    assert "is installed on adb SER123 but not healthy" in r.stderr
    assert "fake 0.5 no frames" in r.stderr
    assert any(c.startswith("adb SER123 push ") for c in sb.calls())


def test_stage_only_with_given_wheel(tmp_path: Path) -> None:
    sb = make_sandbox(tmp_path)
    wheel = build_fake_wheel(tmp_path / "w", "1.2", healthy=True)
    house = tmp_path / "house"
    house.mkdir()
    build_fake_wheel(tmp_path / "other", "9.9", healthy=True).rename(house / "numpy-1.0-py3-none-any.whl")
    cfg = tmp_path / "site.yaml"
    cfg.write_text("mqtt:\n  host: broker.site\n")
    out = tmp_path / "payload"
    sb.run(PUSH, "--stage-only", str(out), "--bundle", str(_bundle(tmp_path)), "--wheel", str(wheel),
           "--wheelhouse", str(house), "--config", str(cfg), PYTHON=sys.executable)
    assert sorted(p.name for p in (out / "wheels").iterdir()) == ["fer_agent-1.2-py3-none-any.whl", "numpy-1.0-py3-none-any.whl"]
    assert (out / "config/agent.yaml").read_text() == cfg.read_text()
    assert (out / "fer-agent.service").read_text() == (REPO / "systemd/fer-agent.service").read_text()
    for s in ("install.sh", "rollback.sh", "uninstall.sh", "lib.sh", "deploy.md"):
        assert (out / s).is_file()
    version = (out / "VERSION").read_text().strip()
    assert version.startswith("1.2-")
    # deterministic: the same inputs give the same release id
    sb.run(PUSH, "--stage-only", str(out), "--bundle", str(tmp_path / "bundle"), "--wheel", str(wheel),
           "--wheelhouse", str(house), "--config", str(cfg), PYTHON=sys.executable)
    assert (out / "VERSION").read_text().strip() == version
    # never wipe a directory that is not a payload
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "keep.txt").write_text("x")
    r = sb.run(PUSH, "--stage-only", str(precious), "--bundle", str(tmp_path / "bundle"), "--wheel", str(wheel),
               "--wheelhouse", str(house), check=False, PYTHON=sys.executable)
    assert r.returncode == 1 and "refusing" in r.stderr and (precious / "keep.txt").exists()


def test_offline_build_without_setuptools_in_the_wheelhouse_is_one_clear_line(tmp_path: Path) -> None:
    """The wheel is built in an isolated environment: offline, its setuptools must come from --wheelhouse."""
    sb = make_sandbox(tmp_path)
    house = tmp_path / "house"
    house.mkdir()
    r = sb.run(PUSH, "--stage-only", str(tmp_path / "payload"), "--bundle", str(_bundle(tmp_path)),
               "--wheelhouse", str(house), check=False, PYTHON=sys.executable, PIP_NO_INDEX="1")
    assert r.returncode == 1
    error = [line for line in r.stderr.splitlines() if "error" in line]
    assert error == [f"push: error: building the wheel failed: no setuptools>=77 wheel in --wheelhouse {house} for the "
                     f"isolated build (add one: {sys.executable} -m pip download --dest {house} 'setuptools>=77')"]
    assert "Traceback" not in r.stderr


@pytest.mark.slow
def test_stage_only_builds_the_real_wheel_in_isolation_offline_and_quietly(tmp_path: Path) -> None:
    """The real package builds into a wheel that carries agent.service, from a wheelhouse with no index, with
    the setuptools of the isolated build (the host venv's own may be older than 77), and no warnings."""
    house = tmp_path / "house"
    house.mkdir()
    got = subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                          "--dest", str(house), "setuptools>=77"], capture_output=True, text=True, timeout=300)
    if got.returncode != 0:
        pytest.skip("no package index to fetch a setuptools>=77 wheel from: " + got.stderr[-300:])
    sb = make_sandbox(tmp_path)
    out = tmp_path / "payload"
    r = sb.run(PUSH, "--stage-only", str(out), "--bundle", str(_bundle(tmp_path)), "--wheelhouse", str(house),
               check=False, PYTHON=sys.executable, PIP_NO_INDEX="1")
    assert r.returncode == 0, r.stderr
    assert "arning" not in r.stderr and "eprecat" not in r.stderr, r.stderr
    wheels = list((out / "wheels").glob("fer_agent-*.whl"))
    assert len(wheels) == 1
    with zipfile.ZipFile(wheels[0]) as z:
        names = z.namelist()
        metadata = z.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert "agent/service.py" in names
    assert any(n.endswith("entry_points.txt") for n in names)
    assert "License-Expression: Apache-2.0" in metadata


def test_usage_errors(tmp_path: Path) -> None:
    sb = make_sandbox(tmp_path)
    r = sb.run(PUSH, check=False)
    assert r.returncode == 2 and "--ssh [user@]host, --adb [serial] or --stage-only DIR" in r.stderr
    r = sb.run(PUSH, "--ssh", "b", "--bundle", str(tmp_path / "none"), check=False)
    assert r.returncode == 1 and "model bundle not found" in r.stderr
    r = sb.run(PUSH, "--ssh", "b", "--health-timeout", "soon", check=False)
    assert r.returncode == 2 and "--health-timeout: expected whole seconds" in r.stderr
    r = sb.run(PUSH, "--stage-only", str(tmp_path / "p"), "--bundle", str(_bundle(tmp_path)),
               "--python-version", "3.8", "--wheel", "/nonexistent.whl", check=False)
    assert r.returncode == 1 and "--wheel: no such file" in r.stderr


# --------------------------------------------------------------------------- status=online over real MQTT

@pytest.mark.slow
def test_push_waits_for_retained_status_online(tmp_path: Path, mosquitto) -> None:  # shared conftest broker
    import paho.mqtt.client as mqtt
    from paho.mqtt import publish

    publish.single("fer/board7/status", "online", qos=1, retain=True, hostname="127.0.0.1", port=mosquitto.port,
                   protocol=mqtt.MQTTv311)
    publish.single("fer/board8/status", "offline", qos=1, retain=True, hostname="127.0.0.1", port=mosquitto.port,
                   protocol=mqtt.MQTTv311)
    sb = make_sandbox(tmp_path)
    wheel = build_fake_wheel(tmp_path / "w", "1.0", healthy=True)
    args = _push_args(tmp_path, sb, wheel, "--broker", f"127.0.0.1:{mosquitto.port}")
    ok = sb.run(PUSH, "--ssh", "board7", *args, "--device-id", "board7", SSH=str(sb.bin / "ssh"), PYTHON=sys.executable)
    assert "status online" in ok.stderr
    bad = sb.run(PUSH, "--ssh", "board8", *args, "--device-id", "board8", "--online-timeout", "1",
                 check=False, SSH=str(sb.bin / "ssh"), PYTHON=sys.executable)
    assert bad.returncode == 6
    assert "status is 'offline'" in bad.stderr and "no status=online from board8" in bad.stderr


def test_dependency_wheels_are_asked_for_the_boards_platform(tmp_path: Path) -> None:
    """pip download gets the board's Python/ABI and every manylinux tag its glibc can load (no network here)."""
    sb = make_sandbox(tmp_path)
    record = tmp_path / "pip-args"
    wrapper = tmp_path / "python-wrapper"
    wrapper.write_text(f"""#!/usr/bin/env bash
if [[ "$1 $2 $3" == "-m pip download" ]]; then printf '%s\\n' "$@" > {record}; exit 0; fi
exec {sys.executable} "$@"
""")
    wrapper.chmod(0o755)
    wheel = build_fake_wheel(tmp_path / "w", "1.0", healthy=True)
    sb.run(PUSH, "--stage-only", str(tmp_path / "p"), "--bundle", str(_bundle(tmp_path)), "--wheel", str(wheel),
           "--python-version", "3.10", "--arch", "aarch64", "--glibc", "2.35", PYTHON=str(wrapper))
    args = record.read_text().splitlines()
    platforms = [args[i + 1] for i, a in enumerate(args) if a == "--platform"]
    assert platforms[0] == "manylinux_2_35_aarch64" and platforms[-2:] == ["manylinux_2_17_aarch64", "manylinux2014_aarch64"]
    assert len(platforms) == 35 - 17 + 2
    assert args[args.index("--python-version") + 1] == "3.10"
    assert "cp310" in args and "--only-binary=:all:" in args
    assert args[-1].endswith("fer_agent-1.0-py3-none-any.whl")
