"""`make system-deps` (.ci/system-deps.sh) and .ci/run, with recording fakes for dpkg, apt-get and systemctl:
it installs only what is missing (mosquitto-clients included), and a system broker the mosquitto package
enabled is stopped and disabled again, with or without systemd; CI prints the slowest tests."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / ".ci" / "system-deps.sh"
PACKAGES = ["mosquitto", "mosquitto-clients", "shellcheck", "systemd", "openssl"]


def _recorder(path: Path, log: Path, body: str = "") -> str:
    path.write_text(f'#!/usr/bin/env bash\nprintf "%s\\n" "$(basename "$0") $*" >> "{log}"\n{body}\n')
    path.chmod(0o755)
    return str(path)


def _run(tmp_path: Path, *, installed: list[str], systemd: bool, enabled: bool = False,
         init_script: bool = True) -> tuple[subprocess.CompletedProcess, list[str]]:
    log = tmp_path / "calls.log"
    log.write_text("")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    installed_file = tmp_path / "installed"
    installed_file.write_text("\n".join(installed) + "\n")
    dpkg = _recorder(bin_dir / "dpkg", log, f'grep -qx "$2" "{installed_file}"')
    apt = _recorder(bin_dir / "apt-get", log)
    systemctl = _recorder(bin_dir / "systemctl", log,
                          f'[[ "$1" != is-enabled ]] || exit {0 if enabled else 1}')
    update_rc = _recorder(bin_dir / "update-rc.d", log)
    run_dir = tmp_path / "run-systemd-system"
    if systemd:
        run_dir.mkdir(exist_ok=True)
    init_d = tmp_path / "init.d"
    init_d.mkdir(exist_ok=True)
    if init_script:
        _recorder(init_d / "mosquitto", log)
    env = {**os.environ, "DPKG": dpkg, "APT_GET": apt, "SYSTEMCTL": systemctl, "UPDATE_RC_D": update_rc,
           "SUDO": "", "SYSTEMD_RUN_DIR": str(run_dir), "INIT_D": str(init_d)}
    r = subprocess.run(["bash", str(SCRIPT), *PACKAGES], env=env, capture_output=True, text=True, timeout=30)
    calls = [c for c in log.read_text().splitlines() if not c.startswith("dpkg ")]
    return r, calls


def test_fresh_systemd_host_installs_clients_and_leaves_no_broker_running_or_enabled(tmp_path: Path) -> None:
    r, calls = _run(tmp_path, installed=["systemd"], systemd=True)
    assert r.returncode == 0, r.stderr
    assert calls == [
        "apt-get update -qq",
        "apt-get install -y -qq --no-install-recommends mosquitto mosquitto-clients shellcheck openssl",
        "systemctl disable --now mosquitto.service",
    ]
    assert "stopped and disabled mosquitto.service" in r.stderr


def test_container_without_systemd_stops_the_init_script_broker_and_does_not_fail(tmp_path: Path) -> None:
    r, calls = _run(tmp_path, installed=["systemd", "openssl", "shellcheck"], systemd=False)
    assert r.returncode == 0, r.stderr
    assert not any(c.startswith("systemctl") for c in calls)
    assert calls[-2:] == ["mosquitto stop", "update-rc.d mosquitto disable"]
    (tmp_path / "bare").mkdir()
    r, calls = _run(tmp_path / "bare", installed=["systemd", "openssl", "shellcheck"], systemd=False,
                    init_script=False)
    assert r.returncode == 0, r.stderr
    assert calls == ["apt-get update -qq",
                     "apt-get install -y -qq --no-install-recommends mosquitto mosquitto-clients"]


def test_nothing_missing_installs_nothing_and_leaves_an_existing_broker_alone(tmp_path: Path) -> None:
    r, calls = _run(tmp_path, installed=PACKAGES, systemd=True, enabled=True)
    assert r.returncode == 0, r.stderr
    assert calls == ["systemctl is-enabled --quiet mosquitto.service"]  # only asked, never disabled
    assert "note: mosquitto.service is enabled" in r.stderr and "sudo systemctl disable --now" in r.stderr
    (tmp_path / "disabled").mkdir()
    r, calls = _run(tmp_path / "disabled", installed=PACKAGES, systemd=True, enabled=False)
    assert r.returncode == 0 and r.stderr == ""


def test_only_the_clients_missing_does_not_touch_the_broker_service(tmp_path: Path) -> None:
    installed = [p for p in PACKAGES if p != "mosquitto-clients"]
    r, calls = _run(tmp_path, installed=installed, systemd=True)
    assert r.returncode == 0, r.stderr
    assert "apt-get install -y -qq --no-install-recommends mosquitto-clients" in calls
    assert "systemctl disable --now mosquitto.service" not in calls


def test_makefile_and_ci_use_the_script_and_print_durations(tmp_path: Path) -> None:
    dry = subprocess.run(["make", "-n", "-C", str(REPO), "system-deps"], capture_output=True, text=True, timeout=30)
    assert dry.returncode == 0, dry.stderr
    assert ".ci/system-deps.sh mosquitto mosquitto-clients shellcheck systemd openssl" in dry.stdout
    fake_make = tmp_path / "make"
    fake_make.write_text('#!/usr/bin/env bash\nprintf "%s\\n" "$@"\n')
    fake_make.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_ARGS"}
    env["PATH"] = f"{tmp_path}:{env['PATH']}"
    ci = subprocess.run([str(REPO / ".ci" / "run")], env=env, capture_output=True, text=True, timeout=30)
    assert ci.returncode == 0, ci.stderr
    assert ci.stdout.splitlines() == ["test", "PYTEST_ARGS=--durations=15", "component-test", "ha-test",
                                      "board-test", "board-test-broken"]
    for target, script in (("board-test", "run.sh"), ("board-test-broken", "broken.sh")):
        dry = subprocess.run(["make", "-n", "-C", str(REPO), target], capture_output=True, text=True, timeout=30)
        assert dry.returncode == 0, dry.stderr
        assert ".ci/system-deps.sh qemu-system-arm qemu-utils qemu-user-static binfmt-support mmdebstrap" in dry.stdout
        assert f"deploy/board-test/{script};" in dry.stdout and f'echo "make {target}: ' in dry.stdout


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck not installed (apt install shellcheck)")
def test_ci_scripts_are_shellcheck_clean() -> None:
    r = subprocess.run(["shellcheck", "-x", "--severity=style", "system-deps.sh", "run", "ha-install.sh"],
                       cwd=SCRIPT.parent, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
