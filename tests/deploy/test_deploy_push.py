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
from test_deploy_support import DEPLOY, QNN_EXTRA, REPO, build_fake_wheel, build_named_wheel, make_sandbox

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
    return [
        "--bundle",
        str(_bundle(tmp)) if not (tmp / "bundle").exists() else str(tmp / "bundle"),
        "--wheel",
        str(wheel),
        "--wheelhouse",
        str(wheelhouse),
        "--remote-dir",
        str(tmp / "remote-payload"),
        "--remote-cli",
        str(sb.path("/opt/fer-agent/current/venv/bin/fer-agent")),
        "--health-timeout",
        "5",
        "--online-timeout",
        "5",
        *extra,
    ]


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
    r = sb.run(
        PUSH,
        "--adb",
        "SER123",
        *_push_args(tmp_path, sb, wheel, "--health-timeout", "1"),
        check=False,
        ADB=str(sb.bin / "adb"),
        PYTHON=sys.executable,
    )
    assert r.returncode == 4, r.stderr
    assert "is installed on adb SER123 but not healthy" in r.stderr
    assert "fake 0.5 no frames" in r.stderr
    assert any(c.startswith("adb SER123 push ") for c in sb.calls())


@pytest.mark.slow
def test_push_of_a_release_that_cannot_start_shows_the_boards_journal(tmp_path: Path) -> None:
    """A first push whose service fails to start: the installer reads why in push.sh's own output (the
    board's journal), without logging in; an upgrade that cannot start is rolled back by install.sh."""
    sb = make_sandbox(tmp_path)
    wheel = build_fake_wheel(tmp_path / "w", "0.5", healthy=True, starts=False)
    r = sb.run(PUSH, "--ssh", "installer@board1", *_push_args(tmp_path, sb, wheel), check=False,
               SSH=str(sb.bin / "ssh"), PYTHON=sys.executable)
    assert r.returncode == 4, r.stderr
    err = r.stderr.splitlines()
    at = err.index("push: last lines of journalctl -u fer-agent on installer@board1:")
    assert "    fake 0.5: error: backend.type auto: no TFLite runtime installed" in err[at + 1 :]
    assert err[-1].startswith("push: error: release 0.5-")
    assert "is installed on installer@board1 but not healthy" in err[-1]
    assert any(c.startswith("ssh installer@board1 ") and "journalctl --unit fer-agent --lines 30" in c
               for c in sb.calls())

    # fixed release, then an upgrade that cannot start: rolled back, exit 3, its journal in the output
    good = build_fake_wheel(tmp_path / "good", "1.0", healthy=True)
    sb.run(PUSH, "--ssh", "installer@board1", *_push_args(tmp_path, sb, good), SSH=str(sb.bin / "ssh"),
           PYTHON=sys.executable)
    broken = build_fake_wheel(tmp_path / "broken", "2.0", healthy=True, starts=False)
    r = sb.run(PUSH, "--ssh", "installer@board1", *_push_args(tmp_path, sb, broken), check=False,
               SSH=str(sb.bin / "ssh"), PYTHON=sys.executable)
    assert r.returncode == 3, r.stderr
    assert "fake 2.0: error: backend.type auto: no TFLite runtime installed" in r.stderr
    assert "was not healthy on installer@board1 and was rolled back" in r.stderr
    assert os.readlink(sb.path("/opt/fer-agent/current")).split("/")[-1].startswith("1.0-")


def test_stage_only_with_given_wheel(tmp_path: Path) -> None:
    sb = make_sandbox(tmp_path)
    wheel = build_fake_wheel(tmp_path / "w", "1.2", healthy=True)
    house = tmp_path / "house"
    house.mkdir()
    build_fake_wheel(tmp_path / "other", "9.9", healthy=True).rename(house / "numpy-1.0-py3-none-any.whl")
    cfg = tmp_path / "site.yaml"
    cfg.write_text("mqtt:\n  host: broker.site\n")
    out = tmp_path / "payload"
    sb.run(
        PUSH,
        "--stage-only",
        str(out),
        "--bundle",
        str(_bundle(tmp_path)),
        "--wheel",
        str(wheel),
        "--wheelhouse",
        str(house),
        "--config",
        str(cfg),
        PYTHON=sys.executable,
    )
    assert sorted(p.name for p in (out / "wheels").iterdir()) == [
        "fer_agent-1.2-py3-none-any.whl",
        "numpy-1.0-py3-none-any.whl",
    ]
    assert (out / "config/agent.yaml").read_text() == cfg.read_text()
    assert (out / "fer-agent.service").read_text() == (REPO / "systemd/fer-agent.service").read_text()
    for s in ("install.sh", "rollback.sh", "uninstall.sh", "lib.sh", "deploy.md"):
        assert (out / s).is_file()
    version = (out / "VERSION").read_text().strip()
    assert version.startswith("1.2-")
    # deterministic: the same inputs give the same release id
    sb.run(
        PUSH,
        "--stage-only",
        str(out),
        "--bundle",
        str(tmp_path / "bundle"),
        "--wheel",
        str(wheel),
        "--wheelhouse",
        str(house),
        "--config",
        str(cfg),
        PYTHON=sys.executable,
    )
    assert (out / "VERSION").read_text().strip() == version
    # never wipe a directory that is not a payload
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "keep.txt").write_text("x")
    r = sb.run(
        PUSH,
        "--stage-only",
        str(precious),
        "--bundle",
        str(tmp_path / "bundle"),
        "--wheel",
        str(wheel),
        "--wheelhouse",
        str(house),
        check=False,
        PYTHON=sys.executable,
    )
    assert r.returncode == 1 and "refusing" in r.stderr and (precious / "keep.txt").exists()


def test_offline_build_without_setuptools_in_the_wheelhouse_is_one_clear_line(tmp_path: Path) -> None:
    """The wheel is built in an isolated environment: offline, its setuptools must come from --wheelhouse."""
    sb = make_sandbox(tmp_path)
    house = tmp_path / "house"
    house.mkdir()
    r = sb.run(
        PUSH,
        "--stage-only",
        str(tmp_path / "payload"),
        "--bundle",
        str(_bundle(tmp_path)),
        "--wheelhouse",
        str(house),
        check=False,
        PYTHON=sys.executable,
        PIP_NO_INDEX="1",
    )
    assert r.returncode == 1
    error = [line for line in r.stderr.splitlines() if "error" in line]
    assert error == [
        f"push: error: building the wheel failed: no setuptools>=77 wheel in --wheelhouse {house} for the "
        f"isolated build (add one: {sys.executable} -m pip download --dest {house} 'setuptools>=77')"
    ]
    assert "Traceback" not in r.stderr


@pytest.mark.slow
def test_stage_only_builds_the_real_wheel_in_isolation_offline_and_quietly(tmp_path: Path) -> None:
    """The real package builds into a wheel that carries agent.service, from a wheelhouse with no index, with
    the setuptools of the isolated build (the host venv's own may be older than 77), and no warnings."""
    house = tmp_path / "house"
    house.mkdir()
    got = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--only-binary=:all:",
            "--dest",
            str(house),
            "setuptools>=77",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if got.returncode != 0:
        pytest.skip("no package index to fetch a setuptools>=77 wheel from: " + got.stderr[-300:])
    sb = make_sandbox(tmp_path)
    out = tmp_path / "payload"
    r = sb.run(
        PUSH,
        "--stage-only",
        str(out),
        "--bundle",
        str(_bundle(tmp_path)),
        "--wheelhouse",
        str(house),
        "--python-version",
        "3.12",
        "--arch",
        "aarch64",
        "--glibc",
        "2.39",
        check=False,
        PYTHON=sys.executable,
        PIP_NO_INDEX="1",
    )
    assert r.returncode == 0, r.stderr
    assert "arning" not in r.stderr and "eprecat" not in r.stderr, r.stderr
    # the real wheel declares the qnn extra that push.sh reads (this wheelhouse just has no onnxruntime_qnn wheel)
    assert f"push: qnn: --wheelhouse {house} has no onnxruntime_qnn wheel; the agent will use snpe" in r.stderr, (
        r.stderr
    )
    wheels = list((out / "wheels").glob("fer_agent-*.whl"))
    assert len(wheels) == 1
    with zipfile.ZipFile(wheels[0]) as z:
        names = z.namelist()
        metadata = z.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert "agent/service.py" in names
    assert any(n.endswith("entry_points.txt") for n in names)
    assert "License-Expression: Apache-2.0" in metadata
    # the TFLite runtime comes with the agent itself (no extra), so pip download for the board fetches it
    assert any(line.startswith("Requires-Dist: ai-edge-litert") and "extra ==" not in line
               for line in metadata.splitlines()), metadata


def test_usage_errors(tmp_path: Path) -> None:
    sb = make_sandbox(tmp_path)
    r = sb.run(PUSH, check=False)
    assert r.returncode == 2 and "--ssh [user@]host, --adb [serial] or --stage-only DIR" in r.stderr
    r = sb.run(PUSH, "--ssh", "b", "--bundle", str(tmp_path / "none"), check=False)
    assert r.returncode == 1 and "model bundle not found" in r.stderr
    r = sb.run(PUSH, "--ssh", "b", "--health-timeout", "soon", check=False)
    assert r.returncode == 2 and "--health-timeout: expected whole seconds" in r.stderr
    r = sb.run(
        PUSH,
        "--stage-only",
        str(tmp_path / "p"),
        "--bundle",
        str(_bundle(tmp_path)),
        "--python-version",
        "3.8",
        "--wheel",
        "/nonexistent.whl",
        check=False,
    )
    assert r.returncode == 1 and "--wheel: no such file" in r.stderr


# --------------------------------------------------------------------------- status=online over real MQTT


@pytest.mark.slow
def test_push_waits_for_retained_status_online(tmp_path: Path, mosquitto) -> None:  # shared conftest broker
    import paho.mqtt.client as mqtt
    from paho.mqtt import publish

    publish.single(
        "fer/board7/status",
        "online",
        qos=1,
        retain=True,
        hostname="127.0.0.1",
        port=mosquitto.port,
        protocol=mqtt.MQTTv311,
    )
    publish.single(
        "fer/board8/status",
        "offline",
        qos=1,
        retain=True,
        hostname="127.0.0.1",
        port=mosquitto.port,
        protocol=mqtt.MQTTv311,
    )
    sb = make_sandbox(tmp_path)
    wheel = build_fake_wheel(tmp_path / "w", "1.0", healthy=True)
    args = _push_args(tmp_path, sb, wheel, "--broker", f"127.0.0.1:{mosquitto.port}")
    ok = sb.run(PUSH, "--ssh", "board7", *args, "--device-id", "board7", SSH=str(sb.bin / "ssh"), PYTHON=sys.executable)
    assert "status online" in ok.stderr
    bad = sb.run(
        PUSH,
        "--ssh",
        "board8",
        *args,
        "--device-id",
        "board8",
        "--online-timeout",
        "1",
        check=False,
        SSH=str(sb.bin / "ssh"),
        PYTHON=sys.executable,
    )
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
    sb.run(
        PUSH,
        "--stage-only",
        str(tmp_path / "p"),
        "--bundle",
        str(_bundle(tmp_path)),
        "--wheel",
        str(wheel),
        "--python-version",
        "3.10",
        "--arch",
        "aarch64",
        "--glibc",
        "2.35",
        PYTHON=str(wrapper),
    )
    args = record.read_text().splitlines()
    platforms = [args[i + 1] for i, a in enumerate(args) if a == "--platform"]
    assert platforms[0] == "manylinux_2_35_aarch64" and platforms[-2:] == [
        "manylinux_2_17_aarch64",
        "manylinux2014_aarch64",
    ]
    assert len(platforms) == 35 - 17 + 2
    assert args[args.index("--python-version") + 1] == "3.10"
    assert "cp310" in args and "--only-binary=:all:" in args
    assert args[-1].endswith("fer_agent-1.0-py3-none-any.whl")


# --------------------------------------------------------------------------- the qnn extra (NPU runtime)

NO_QNN = "no onnxruntime-qnn wheel for it; the agent will use snpe (if the SDK is installed) or tflite"


def _recording_python(tmp: Path) -> tuple[Path, Path]:
    """A PYTHON for push.sh that records `pip download`'s arguments (no network) and runs everything else."""
    record = tmp / "pip-args"
    wrapper = tmp / "python-wrapper"
    wrapper.write_text(f"""#!/usr/bin/env bash
if [[ "$1 $2 $3" == "-m pip download" ]]; then printf '%s\\n' "$@" > {record}; exit 0; fi
exec {sys.executable} "$@"
""")
    wrapper.chmod(0o755)
    return wrapper, record


def _stage(
    tmp: Path, *args: str, qnn_extra: bool = True, check: bool = True
) -> tuple[subprocess.CompletedProcess, list[str]]:
    sb = make_sandbox(tmp)
    wrapper, record = _recording_python(tmp)
    wheel = build_fake_wheel(tmp / "w", "1.0", healthy=True, qnn_extra=qnn_extra)
    r = sb.run(
        PUSH,
        "--stage-only",
        str(tmp / "p"),
        "--bundle",
        str(_bundle(tmp)),
        "--wheel",
        str(wheel),
        *args,
        check=check,
        PYTHON=str(wrapper),
    )
    return r, (record.read_text().splitlines() if record.exists() else [])


def test_qnn_wheels_are_asked_for_when_the_board_has_python_3_11_and_glibc_2_34(tmp_path: Path) -> None:
    r, args = _stage(tmp_path, "--python-version", "3.11", "--arch", "aarch64", "--glibc", "2.34")
    assert list(QNN_EXTRA) == args[-2:], args  # without their python_version markers (pip reads those for the host)
    assert args[-3].endswith("fer_agent-1.0-py3-none-any.whl")
    platforms = [args[i + 1] for i, a in enumerate(args) if a == "--platform"]
    assert platforms[0] == "manylinux_2_34_aarch64" and "cp311" in args
    assert (
        "push: qnn: adding onnxruntime>=1.24.2 onnxruntime-qnn>=2.7 (manylinux_2_34_aarch64, cp311: the NPU runtime)"
    ) in r.stderr.splitlines()


@pytest.mark.parametrize(("python", "glibc"), [("3.10", "2.35"), ("3.12", "2.31")])
def test_no_qnn_wheels_below_python_3_11_or_glibc_2_34_and_one_plain_line(
    tmp_path: Path, python: str, glibc: str
) -> None:
    r, args = _stage(
        tmp_path, "--python-version", python, "--arch", "aarch64", "--glibc", glibc, "--board-name", "cam-lobby"
    )
    assert not any(a.startswith("onnxruntime") for a in args), args
    assert args[-1].endswith("fer_agent-1.0-py3-none-any.whl")
    qnn_lines = [line for line in r.stderr.splitlines() if "onnxruntime" in line or line.startswith("push: qnn")]
    assert qnn_lines == [f"push: board cam-lobby: Python {python} / glibc {glibc}: {NO_QNN}"], r.stderr


def test_no_qnn_flag_and_other_arches(tmp_path: Path) -> None:
    r, args = _stage(tmp_path / "a", "--python-version", "3.12", "--arch", "aarch64", "--glibc", "2.39", "--no-qnn")
    assert not any(a.startswith("onnxruntime") for a in args)
    assert "push: qnn: off (--qnn no); the agent will use snpe (if the SDK is installed) or tflite" in r.stderr
    r, args = _stage(tmp_path / "b", "--python-version", "3.12", "--arch", "x86_64", "--glibc", "2.39")
    assert not any(a.startswith("onnxruntime") for a in args)
    assert "push: board (--stage-only): x86_64: no NPU wheel for it (onnxruntime-qnn for boards is aarch64)" in r.stderr
    # a wheel without the extra (an older fer_agent): said, and nothing asked for
    r, args = _stage(
        tmp_path / "c", "--python-version", "3.12", "--arch", "aarch64", "--glibc", "2.39", qnn_extra=False
    )
    assert not any(a.startswith("onnxruntime") for a in args)
    assert "push: qnn: fer_agent-1.0-py3-none-any.whl declares no qnn extra;" in r.stderr


def test_qnn_yes_stops_on_a_board_that_cannot_load_it(tmp_path: Path) -> None:
    r, args = _stage(
        tmp_path / "a", "--python-version", "3.10", "--arch", "aarch64", "--glibc", "2.35", "--qnn", "yes", check=False
    )
    assert r.returncode == 1 and args == []  # before any download
    assert r.stderr.splitlines()[-1] == (
        "push: error: board (--stage-only): Python 3.10 / glibc 2.35: no "
        "onnxruntime-qnn wheel for it (it needs aarch64, Python >= 3.11 and "
        "glibc >= 2.34; --qnn yes)"
    )
    r, _ = _stage(tmp_path / "b", "--qnn", "maybe", check=False)
    assert r.returncode == 2 and "--qnn: expected auto, yes or no, got 'maybe'" in r.stderr


def test_qnn_from_a_wheelhouse(tmp_path: Path) -> None:
    """Offline: the onnxruntime(-qnn) wheels come from --wheelhouse when the board fits, and stay out otherwise."""
    sb = make_sandbox(tmp_path)
    house = tmp_path / "house"
    for name, version in (("onnxruntime", "1.24.2"), ("onnxruntime_qnn", "2.7.0"), ("numpy", "2.0")):
        build_named_wheel(house, name, version)
    wheel = build_fake_wheel(tmp_path / "w", "1.0", healthy=True, qnn_extra=True)
    common = [
        "--bundle",
        str(_bundle(tmp_path)),
        "--wheel",
        str(wheel),
        "--wheelhouse",
        str(house),
        "--arch",
        "aarch64",
    ]

    def staged(out: str, *args: str) -> tuple[list[str], str]:
        r = sb.run(PUSH, "--stage-only", str(tmp_path / out), *common, *args, PYTHON=sys.executable)
        return sorted(p.name.split("-")[0] for p in (tmp_path / out / "wheels").iterdir()), r.stderr

    names, err = staged("fits", "--python-version", "3.12", "--glibc", "2.39")
    assert names == ["fer_agent", "numpy", "onnxruntime", "onnxruntime_qnn"]
    assert f"push: qnn: onnxruntime-qnn from {house} (the NPU runtime)" in err
    names, err = staged("old", "--python-version", "3.10", "--glibc", "2.35")
    assert names == ["fer_agent", "numpy"] and NO_QNN in err
    names, err = staged("off", "--python-version", "3.12", "--glibc", "2.39", "--no-qnn")
    assert names == ["fer_agent", "numpy"] and "qnn: off" in err
    (house / "onnxruntime_qnn-2.7.0-py3-none-any.whl").unlink()
    names, err = staged("lacking", "--python-version", "3.12", "--glibc", "2.39")
    assert names == ["fer_agent", "numpy"]
    assert f"push: qnn: --wheelhouse {house} has no onnxruntime_qnn wheel; the agent will use snpe" in err


@pytest.mark.slow
def test_push_over_ssh_asks_the_board_and_says_plainly_when_qnn_cannot_go_there(tmp_path: Path) -> None:
    """The probe runs over the same ssh as the rest; a Python 3.10 board gets the agent without the qnn wheels."""
    sb = make_sandbox(tmp_path)
    board_bin = tmp_path / "board-bin"  # the board's python3, as the (fake) ssh runs it
    board_bin.mkdir()
    (board_bin / "python3").write_text(f"""#!/usr/bin/env bash
if [[ "$1" == -c && "$2" == *libc_ver* ]]; then echo "3.10 aarch64 2.35"; exit 0; fi
exec {sys.executable} "$@"
""")
    (board_bin / "python3").chmod(0o755)
    wheel = build_fake_wheel(tmp_path / "w", "1.0", healthy=True, qnn_extra=True)
    for name, version in (("onnxruntime", "1.24.2"), ("onnxruntime_qnn", "2.7.0")):
        build_named_wheel(tmp_path / "wheelhouse", name, version)
    r = sb.run(
        PUSH,
        "--ssh",
        "installer@board1",
        *_push_args(tmp_path, sb, wheel),
        SSH=str(sb.bin / "ssh"),
        PYTHON=sys.executable,
        PATH=f"{board_bin}:{sb.env['PATH']}",
    )
    assert "push: board: Python 3.10, aarch64, glibc 2.35" in r.stderr
    assert f"push: board installer@board1: Python 3.10 / glibc 2.35: {NO_QNN}" in r.stderr.splitlines()
    assert any(c.startswith("ssh installer@board1 python3 -c") for c in sb.calls())
    release = os.readlink(sb.path("/opt/fer-agent/current")).split("/")[-1]
    site = list(sb.path(f"/opt/fer-agent/releases/{release}/venv/lib").glob("python3*/site-packages"))[0]
    assert not list(site.glob("onnxruntime*"))


def test_the_fake_wheels_declare_what_pyproject_declares() -> None:
    import tomllib

    extra = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]["qnn"]
    assert [r.split(";")[0].strip() for r in extra] == list(QNN_EXTRA)
    assert all("python_version >= '3.11'" in r for r in extra)


# --------------------------------------------------------------------------- a TFLite runtime on every board

BOARDS = [(machine, f"3.{minor}") for machine in ("aarch64", "x86_64") for minor in (10, 11, 12, 13)]


@pytest.mark.parametrize(("machine", "python"), BOARDS)
def test_every_board_install_brings_the_tflite_runtime_the_agent_loads_first(machine: str, python: str) -> None:
    """BlazeFace (without its NPU file) and the CPU fallback run on LiteRT: the agent's own requirements, with no
    extra, must bring it on every board platform, or push.sh / install.sh / Ansible ship a board that cannot run."""
    import inspect

    import tomllib
    from packaging.requirements import Requirement

    from agent.contracts import litert

    env = {"python_version": python, "platform_machine": machine, "sys_platform": "linux", "extra": ""}
    base = [Requirement(r) for r in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]]
    wanted = {r.name for r in base if r.marker is None or r.marker.evaluate(env)}
    loader = inspect.getsource(litert._interpreter_module)
    assert loader.index('"ai_edge_litert.interpreter"') < loader.index('"tflite_runtime.interpreter"')
    assert "ai-edge-litert" in wanted, f"no TFLite runtime among the board's requirements: {sorted(wanted)}"
