"""deploy/install.sh, rollback.sh, uninstall.sh into a throwaway root with recording fakes.

The venvs are real (python -m venv + pip --no-index from the payload's wheels),
the wheel is a tiny fake whose `fer-agent health` answers as the test decides.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_deploy_support import DEPLOY, MUTATING, make_payload, make_sandbox, snapshot

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="bash not available")


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


@pytest.mark.slow
def test_install_twice_changes_nothing_the_second_time(tmp_path: Path) -> None:
    sb = make_sandbox(tmp_path)
    payload = make_payload(tmp_path, "1.0")
    first = sb.run(payload / "install.sh", "--health-timeout", "5")
    calls = sb.calls()
    assert "groupadd --system" in " ".join(calls)
    assert any(c.startswith("useradd --system") and c.endswith("fer-agent") for c in calls)
    assert "usermod --append --groups video fer-agent" in calls
    assert "usermod --append --groups render fer-agent" in calls
    assert not any("fastrpc" in c for c in calls)  # the board has no such group
    assert [c for c in calls if c.startswith("systemctl")] == [
        "systemctl daemon-reload",
        "systemctl enable fer-agent.service",
        "systemctl restart fer-agent.service",
    ]
    assert "healthy: fake 1.0" in first.stderr

    opt = sb.path("/opt/fer-agent")
    assert os.readlink(opt / "current") == "releases/1.0"
    assert not (opt / "previous").exists()
    assert (opt / "releases/1.0/.complete").is_file()
    assert (opt / "releases/1.0/bundle/manifest.json").is_file()
    assert (opt / "releases/1.0/deploy/rollback.sh").is_file()
    assert (opt / "releases/1.0/deploy/deploy.md").is_file()  # the unit's Documentation=
    cli = sb.path("/usr/local/bin/fer-agent")
    assert os.readlink(cli) == "/opt/fer-agent/current/venv/bin/fer-agent"
    out = subprocess.run(
        [str(opt / "current/venv/bin/fer-agent"), "--version"], check=False, capture_output=True, text=True
    )
    assert out.stdout.strip() == "1.0"

    etc = sb.path("/etc/fer-agent")
    assert _mode(etc) == 0o750
    assert _mode(etc / "agent.yaml") == 0o640
    assert _mode(etc / "secrets.env") == 0o600
    assert _mode(etc / "snpe.env") == 0o644
    assert _mode(sb.path("/etc/systemd/system/fer-agent.service")) == 0o644
    assert sb.path("/etc/systemd/system/fer-agent.service").read_text() == (payload / "fer-agent.service").read_text()
    assert _mode(opt / "releases/1.0/venv/bin/python") & 0o022 == 0  # code is not writable by the agent
    # byte-compiled at install (the agent may not write .pyc), except the dependencies' test suites
    site = _site_packages(sb, "1.0")
    assert list((site / "__pycache__").glob("fer_agent_fake.*.pyc"))
    assert not list((site / "fer_agent_fake_suite").rglob("*.pyc"))

    before = snapshot(sb.root)
    sb.clear_calls()
    second = sb.run(payload / "install.sh", "--health-timeout", "5")
    assert "nothing changed" in second.stderr
    assert not [c for c in sb.calls() if c.startswith(MUTATING)], sb.calls()
    assert snapshot(sb.root) == before


@pytest.mark.slow
def test_upgrade_rollback_and_uninstall(tmp_path: Path) -> None:
    sb = make_sandbox(tmp_path)
    sb.run(make_payload(tmp_path, "1.0") / "install.sh", "--health-timeout", "5")
    etc = sb.path("/etc/fer-agent")
    opt = sb.path("/opt/fer-agent")

    # a config the new release rejects: refused before anything switches
    original = (etc / "agent.yaml").read_text()
    (etc / "agent.yaml").write_text(original + "bogus_key: 1\n")
    sb.clear_calls()
    refused = sb.run(make_payload(tmp_path, "1.1", config_comment="new in 1.1") / "install.sh", check=False)
    assert refused.returncode == 1
    assert "release 1.1 rejects the config it would run with (/etc/fer-agent/agent.yaml)" in refused.stderr
    assert "bogus_key: unknown key" in refused.stderr
    assert os.readlink(opt / "current") == "releases/1.0"
    assert not any(c.startswith("systemctl") for c in sb.calls())

    # a person edits agent.yaml properly
    (etc / "agent.yaml").write_text(original.replace("localhost", "broker.lan"))

    # healthy upgrade whose default config changed: edited file kept, untouched file follows
    sb.clear_calls()
    up = sb.run(tmp_path / "payload-1.1" / "install.sh", "--health-timeout", "5")
    assert os.readlink(opt / "current") == "releases/1.1"
    assert os.readlink(opt / "previous") == "releases/1.0"
    assert "broker.lan" in (etc / "agent.yaml").read_text()
    assert "new in 1.1" in (etc / "agent.yaml.new").read_text()
    assert "new in 1.1" in (etc / "snpe.env").read_text()
    assert "kept your edited /etc/fer-agent/agent.yaml" in up.stderr
    assert "systemctl restart fer-agent.service" in sb.calls()
    assert "systemctl daemon-reload" not in sb.calls()  # same unit

    # unhealthy upgrade: rolled back automatically, with the reason
    sb.clear_calls()
    bad = sb.run(make_payload(tmp_path, "2.0", healthy=False) / "install.sh", "--health-timeout", "1", check=False)
    assert bad.returncode == 3, bad.stderr
    assert "release 2.0 is unhealthy" in bad.stderr and "fake 2.0 no frames for 45 s" in bad.stderr
    assert "rolling back to 1.1" in bad.stderr and "rolled back to 1.1, which is healthy" in bad.stderr
    assert "fer-agent: last lines of journalctl -u fer-agent:" in bad.stderr  # before the rollback restarts
    assert os.readlink(opt / "current") == "releases/1.1"
    assert os.readlink(opt / "previous") == "releases/2.0"
    assert sb.calls().count("systemctl restart fer-agent.service") == 2
    out = subprocess.run(
        [str(opt / "current/venv/bin/fer-agent"), "--version"], check=False, capture_output=True, text=True
    )
    assert out.stdout.strip() == "1.1"

    # manual rollback to a named release, then --list
    rb = sb.run(opt / "current/deploy/rollback.sh", "--to", "1.0", "--health-timeout", "5")
    assert "current release: 1.0 (previous: 1.1)" in rb.stderr
    assert os.readlink(opt / "current") == "releases/1.0"
    listing = sb.run(opt / "current/deploy/rollback.sh", "--list").stdout.splitlines()
    assert sorted(listing) == ["1.0 (current)", "1.1 (previous)", "2.0"]
    again = sb.run(opt / "current/deploy/rollback.sh", "--to", "nope", check=False)
    assert again.returncode == 1 and "release nope is not installed" in again.stderr

    # uninstall keeping config, then everything
    state = sb.path("/var/lib/fer-agent")
    state.mkdir(parents=True)
    (state / "mqtt-outbox.sqlite3").write_bytes(b"x")
    sb.clear_calls()
    shutil.copy(opt / "current/deploy/uninstall.sh", tmp_path / "uninstall.sh")
    shutil.copy(opt / "current/deploy/lib.sh", tmp_path / "lib.sh")
    sb.run(tmp_path / "uninstall.sh", "--keep-config", "--keep-state")
    assert not opt.exists() and not sb.path("/etc/systemd/system/fer-agent.service").exists()
    assert not sb.path("/usr/local/bin/fer-agent").is_symlink()
    assert (etc / "agent.yaml").exists() and (state / "mqtt-outbox.sqlite3").exists()
    assert "systemctl disable --now fer-agent.service" in sb.calls()
    assert not any(c.startswith("userdel") for c in sb.calls())
    sb.run(tmp_path / "uninstall.sh")
    assert not etc.exists() and not state.exists()
    assert "userdel fer-agent" in sb.calls()
    assert "nothing to remove" in sb.run(tmp_path / "uninstall.sh").stderr


@pytest.mark.slow
def test_upgrade_that_fails_to_start_is_rolled_back_with_its_journal(tmp_path: Path) -> None:
    """systemctl restart fails (Type=notify: ExecStart exited before READY=1): under `set -e` that used to end
    install.sh with exit 1 and `current` on the broken release; now it rolls back like an unhealthy one."""
    sb = make_sandbox(tmp_path)
    sb.run(make_payload(tmp_path, "1.0") / "install.sh", "--health-timeout", "5")
    opt = sb.path("/opt/fer-agent")
    sb.clear_calls()
    bad = sb.run(make_payload(tmp_path, "2.0", starts=False) / "install.sh", "--health-timeout", "5", check=False)
    assert bad.returncode == 3, bad.stderr
    err = bad.stderr.splitlines()
    assert "fer-agent: systemctl restart fer-agent.service failed: Job for fer-agent.service failed because the " \
        "control process exited with error code." in err
    journal = err.index("fer-agent: last lines of journalctl -u fer-agent:")
    assert "    fake 2.0: error: backend.type auto: no TFLite runtime installed" in err[journal + 1 :]
    assert "fer-agent: rolling back to 1.0" in err and "rolled back to 1.0, which is healthy" in bad.stderr
    assert os.readlink(opt / "current") == "releases/1.0" and os.readlink(opt / "previous") == "releases/2.0"
    calls = [c for c in sb.calls() if c.startswith(("systemctl", "journalctl"))]
    restarts = [i for i, c in enumerate(calls) if c == "systemctl restart fer-agent.service"]
    assert len(restarts) == 2 and calls[restarts[1] - 1] == "systemctl reset-failed fer-agent.service"
    assert any(c.startswith("journalctl --unit fer-agent.service --since @") for c in calls)
    assert (sb.db / "active.fer-agent.service").exists()  # the old release runs again

    # rolling forward by hand onto the release that cannot start: switched, said, exit 5
    rb = sb.run(opt / "current/deploy/rollback.sh", "--health-timeout", "5", check=False)
    assert rb.returncode == 5, rb.stderr
    assert "release 2.0 does not start: systemctl restart fer-agent.service failed" in rb.stderr
    assert "no TFLite runtime installed" in rb.stderr


@pytest.mark.slow
def test_first_install_that_fails_to_start_says_so_with_its_journal(tmp_path: Path) -> None:
    sb = make_sandbox(tmp_path)
    r = sb.run(make_payload(tmp_path, "0.9", starts=False) / "install.sh", "--health-timeout", "5", check=False)
    assert r.returncode == 4, r.stderr
    assert "release 0.9 is unhealthy and there is no previous release to roll back to: systemctl restart " \
        "fer-agent.service failed" in r.stderr
    assert "no TFLite runtime installed" in r.stderr
    assert os.readlink(sb.path("/opt/fer-agent/current")) == "releases/0.9"


@pytest.mark.slow
def test_first_install_unhealthy_has_nothing_to_roll_back(tmp_path: Path) -> None:
    sb = make_sandbox(tmp_path)
    r = sb.run(make_payload(tmp_path, "0.9", healthy=False) / "install.sh", "--health-timeout", "1", check=False)
    assert r.returncode == 4
    assert "no previous release to roll back to" in r.stderr and "fake 0.9 no frames" in r.stderr
    assert os.readlink(sb.path("/opt/fer-agent/current")) == "releases/0.9"


def test_same_release_id_with_other_content_is_refused(tmp_path: Path) -> None:
    sb = make_sandbox(tmp_path)
    payload = make_payload(tmp_path, "1.0")
    rel = sb.path("/opt/fer-agent/releases/1.0")
    rel.mkdir(parents=True)
    (rel / ".complete").write_text("0" * 64 + "\n")
    r = sb.run(payload / "install.sh", check=False)
    assert r.returncode == 1
    assert "release 1.0 is already installed with different wheels/bundle" in r.stderr


@pytest.mark.parametrize(
    "breakage, message",
    [
        ("bundle", "model bundle missing: "),
        ("wheel", "expected exactly one fer_agent-*.whl in "),
        ("version", "VERSION missing (or pass --release ID)"),
    ],
)
def test_bad_payload_gets_a_clear_error(tmp_path: Path, breakage: str, message: str) -> None:
    sb = make_sandbox(tmp_path)
    payload = make_payload(tmp_path, "1.0")
    {
        "bundle": lambda: shutil.rmtree(payload / "bundle"),
        "wheel": lambda: shutil.rmtree(payload / "wheels"),
        "version": lambda: (payload / "VERSION").unlink(),
    }[breakage]()
    r = sb.run(payload / "install.sh", check=False)
    assert r.returncode == 1
    assert r.stderr.startswith("fer-agent: error: ") and message in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not sb.path("/opt/fer-agent").exists()  # checked before touching anything


def test_usage_errors(tmp_path: Path) -> None:
    sb = make_sandbox(tmp_path)
    r = sb.run(DEPLOY / "install.sh", "--bogus", check=False)
    assert r.returncode == 2 and "unknown option: --bogus" in r.stderr
    r = sb.run(DEPLOY / "install.sh", "--keep", "1", check=False)
    assert r.returncode == 2 and "--keep" in r.stderr
    assert "Payload layout" in sb.run(DEPLOY / "install.sh", "--help").stdout


def test_refuses_to_run_unprivileged_on_the_real_root(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("running as root: the check only matters for other users")
    sb = make_sandbox(tmp_path)
    r = sb.run(DEPLOY / "install.sh", check=False, DESTDIR="")
    assert r.returncode == 2 and "run as root" in r.stderr


SCRIPTS = sorted(DEPLOY.glob("*.sh")) + sorted((DEPLOY / "board-test").glob("*.sh"))


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck not installed (apt install shellcheck)")
@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_shellcheck_clean(script: Path) -> None:
    r = subprocess.run(
        ["shellcheck", "-x", "--severity=style", script.name],
        cwd=script.parent,
        check=False,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_every_script_is_strict_and_executable() -> None:
    assert {p.name for p in SCRIPTS} >= {"install.sh", "push.sh", "rollback.sh", "uninstall.sh", "lib.sh"}
    for p in SCRIPTS:
        text = p.read_text()
        if p.name != "lib.sh":
            assert text.startswith("#!/usr/bin/env bash\n"), p
            assert "set -euo pipefail" in text, p
            assert os.access(p, os.X_OK), f"{p} is not executable"


@pytest.mark.slow
def test_old_releases_are_pruned_but_current_and_previous_kept(tmp_path: Path) -> None:
    sb = make_sandbox(tmp_path)
    rels = sb.path("/opt/fer-agent/releases")
    for age, name in enumerate(["0.3", "0.2", "0.1"], start=1):  # 0.1 oldest
        (rels / name).mkdir(parents=True)
        (rels / name / ".complete").write_text("x\n")
        t = time.time() - 3600 * age
        os.utime(rels / name, (t, t))
    os.symlink("releases/0.1", sb.path("/opt/fer-agent/current"))  # the oldest one is running
    r = sb.run(make_payload(tmp_path, "1.0") / "install.sh", "--keep", "2", "--health-timeout", "5")
    assert sorted(p.name for p in rels.iterdir()) == ["0.1", "1.0"]  # current + previous, nothing else
    assert os.readlink(sb.path("/opt/fer-agent/previous")) == "releases/0.1"
    assert "removed old release 0.2" in r.stderr and "removed old release 0.3" in r.stderr


# --------------------------------------------------------------------------- the qnn extra (NPU runtime)


def _site_packages(sb, release: str) -> Path:
    return next(sb.path(f"/opt/fer-agent/releases/{release}/venv/lib").glob("python3*/site-packages"))


@pytest.mark.slow
def test_qnn_wheels_in_the_payload_are_installed_as_the_qnn_extra(tmp_path: Path) -> None:
    """This machine's Python is >= 3.11 on glibc >= 2.34: install.sh installs fer_agent[qnn] from the payload."""
    sb = make_sandbox(tmp_path)
    payload = make_payload(tmp_path, "1.0", qnn=True)
    r = sb.run(payload / "install.sh", "--health-timeout", "5")
    assert (
        "fer-agent: qnn: installing onnxruntime_qnn-2.7.0-py3-none-any.whl (the NPU runtime)" in r.stderr.splitlines()
    )
    site = _site_packages(sb, "1.0")
    assert (site / "onnxruntime_qnn/__init__.py").is_file() and (site / "onnxruntime/__init__.py").is_file()
    again = sb.run(payload / "install.sh", "--health-timeout", "5")
    assert "nothing changed" in again.stderr and "qnn: installing" not in again.stderr


@pytest.mark.slow
def test_a_board_below_python_3_11_or_glibc_2_34_gets_the_agent_without_qnn_and_one_plain_line(tmp_path: Path) -> None:
    """A payload built for another board of the fleet: this one (Python 3.10 here) installs without the extra."""
    sb = make_sandbox(tmp_path)
    payload = make_payload(tmp_path, "1.0", qnn=True)
    board_python = tmp_path / "board-python"
    board_python.write_text(f"""#!/usr/bin/env bash
if [[ "$1" == -c && "$2" == *libc_ver* ]]; then echo "3.10 2.35 aarch64"; exit 0; fi
exec {sys.executable} "$@"
""")
    board_python.chmod(0o755)
    r = sb.run(payload / "install.sh", "--health-timeout", "5", PYTHON=str(board_python))
    host = subprocess.run(["hostname"], capture_output=True, text=True).stdout.strip()
    assert (
        f"fer-agent: board {host}: Python 3.10 / glibc 2.35: no onnxruntime-qnn wheel for it; the agent will use "
        "snpe (if the SDK is installed) or tflite"
    ) in r.stderr.splitlines()
    assert "healthy: fake 1.0" in r.stderr
    assert not list(_site_packages(sb, "1.0").glob("onnxruntime*"))


@pytest.mark.parametrize(
    ("python", "glibc", "fits"),
    [
        ("3.11", "2.34", True),
        ("3.13", "2.39", True),
        ("3.10", "2.39", False),
        ("3.12", "2.31", False),
        ("3.12", "0.0", False),
        ("3.9", "2.35", False),
    ],
)
def test_qnn_fits_rule(python: str, glibc: str, fits: bool) -> None:
    r = subprocess.run(["bash", "-c", f'. "{DEPLOY}/lib.sh"; qnn_fits {python} {glibc}'], check=False)
    assert (r.returncode == 0) is fits
