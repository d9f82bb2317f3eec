"""deploy/ansible: syntax check, --check and a real run against a local connection.

The local runs install into a throwaway root with the same recording fakes as
the install.sh tests, so no board (and no root) is touched.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from test_deploy_support import DEPLOY, build_fake_wheel, build_named_wheel, make_sandbox

ANSIBLE = DEPLOY / "ansible"
_venv_bin = Path(sys.executable).parent
PLAYBOOK_BIN = shutil.which("ansible-playbook") or (
    str(_venv_bin / "ansible-playbook") if (_venv_bin / "ansible-playbook").exists() else None
)
pytestmark = pytest.mark.skipif(
    PLAYBOOK_BIN is None, reason="ansible-playbook not installed (pip install ansible-core)"
)


def _env(tmp: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "ANSIBLE_HOME": str(tmp / "ansible-home"),
            "ANSIBLE_LOCAL_TEMP": str(tmp / "ansible-tmp"),
            "ANSIBLE_REMOTE_TEMP": str(tmp / "ansible-remote-tmp"),
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_LOCALHOST_WARNING": "False",
            "ANSIBLE_RETRY_FILES_ENABLED": "False",
            "ANSIBLE_STDOUT_CALLBACK": "default",
        }
    )
    return env


def _playbook(tmp: Path, *args: str, inventory: Path | None = None) -> subprocess.CompletedProcess:
    inv = inventory or (ANSIBLE / "inventory.example.yml")
    return subprocess.run(
        [PLAYBOOK_BIN, "-i", str(inv), str(ANSIBLE / "site.yml"), *args],
        env=_env(tmp),
        check=False,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_syntax_check(tmp_path: Path) -> None:
    r = _playbook(tmp_path, "--syntax-check")
    assert r.returncode == 0, r.stdout + r.stderr


def test_example_inventory_lists_the_fleet(tmp_path: Path) -> None:
    r = subprocess.run(
        [
            str(Path(PLAYBOOK_BIN).with_name("ansible-inventory")),
            "-i",
            str(ANSIBLE / "inventory.example.yml"),
            "--list",
        ],
        env=_env(tmp_path),
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    inv = json.loads(r.stdout)
    assert sorted(inv["fer_agents"]["hosts"]) == ["cam-entrance", "cam-lobby"]
    assert inv["_meta"]["hostvars"]["cam-lobby"]["fer_agent_serial"] == 1


def test_rolling_update_is_wired_to_serial() -> None:
    text = (ANSIBLE / "site.yml").read_text()
    assert re.search(r"serial: \"\{\{ fer_agent_serial \| default\('100%'\) \}\}\"", text)
    assert "max_fail_percentage" in text


def _local_inventory(tmp: Path, sb, qnn_wheels: bool = False, **extra: object) -> Path:
    import grp
    import pwd

    bundle = tmp / "bundle"
    bundle.mkdir(exist_ok=True)
    (bundle / "manifest.json").write_text('{"model_name": "fake"}\n')
    house = tmp / "house"
    house.mkdir(exist_ok=True)
    wheel = build_fake_wheel(tmp / "w", "3.0", healthy=True, qnn_extra=qnn_wheels)
    if qnn_wheels:  # an offline controller's wheelhouse with (stand-ins for) the NPU runtime's wheels
        build_named_wheel(house, "onnxruntime", "1.24.2")
        build_named_wheel(house, "onnxruntime_qnn", "2.7.0")
    install_env = {k: v for k, v in sb.env.items() if k != "DESTDIR" and k not in ("HOME",)}
    hostvars = {
        "ansible_connection": "local",
        "ansible_python_interpreter": sys.executable,
        "fer_agent_destdir": str(sb.root),
        "fer_agent_bundle": str(bundle),
        "fer_agent_wheel": str(wheel),
        "fer_agent_wheelhouse": str(house),
        "fer_agent_payload_dir": str(tmp / "payload"),
        "fer_agent_remote_root": str(tmp / "remote"),
        "fer_agent_controller_python": sys.executable,
        "fer_agent_install_env": install_env,
        "fer_agent_systemctl": sb.env["SYSTEMCTL"],
        "fer_agent_owner": pwd.getpwuid(os.geteuid()).pw_name,
        "fer_agent_group": grp.getgrgid(os.getegid()).gr_name,
        "fer_agent_health_timeout": 5,
        "fer_agent_mqtt_host": "broker.test",
        **extra,
    }
    inv = tmp / "inventory.json"
    inv.write_text(json.dumps({"fer_agents": {"hosts": {"board-local": hostvars}}}))
    return inv


def _recap(stdout: str) -> dict[str, int]:
    m = re.search(r"board-local\s*:\s*(.*)", stdout.split("PLAY RECAP")[-1])
    assert m, stdout
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", m.group(1))}


@pytest.mark.slow
@pytest.mark.component
def test_check_mode_against_local_connection_changes_nothing(tmp_path: Path) -> None:
    sb = make_sandbox(tmp_path)
    r = _playbook(tmp_path, "--check", inventory=_local_inventory(tmp_path, sb))
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr
    recap = _recap(r.stdout)
    assert recap["failed"] == 0 and recap["changed"] >= 1
    assert (tmp_path / "payload" / "VERSION").is_file()  # built on the controller even in --check
    assert not sb.path("/opt/fer-agent").exists()  # but nothing installed
    assert not (tmp_path / "remote").exists()


@pytest.mark.slow
@pytest.mark.component
def test_real_local_run_installs_and_is_idempotent(tmp_path: Path) -> None:
    sb = make_sandbox(tmp_path)
    inv = _local_inventory(tmp_path, sb)
    r = _playbook(tmp_path, inventory=inv)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr
    assert _recap(r.stdout)["failed"] == 0
    release = (tmp_path / "payload" / "VERSION").read_text().strip()
    assert os.readlink(sb.path("/opt/fer-agent/current")) == f"releases/{release}"
    cfg = sb.path("/etc/fer-agent/agent.yaml").read_text()
    assert "managed by Ansible" in cfg and "host: broker.test" in cfg and "device_id: board-local" in cfg
    assert "systemctl restart fer-agent.service" in sb.calls()

    # second run: nothing to do
    sb.clear_calls()
    again = _playbook(tmp_path, inventory=inv)
    assert again.returncode == 0, again.stdout[-4000:]
    assert _recap(again.stdout)["changed"] == 0, again.stdout[-4000:]
    assert not any("restart" in c for c in sb.calls())

    # a password from the vault: secrets.env 0600 and a restart by the handler
    inv2 = _local_inventory(tmp_path, sb, fer_agent_mqtt_username="fer", fer_agent_mqtt_password="s3cret")
    sb.clear_calls()
    third = _playbook(tmp_path, inventory=inv2)
    assert third.returncode == 0, third.stdout[-4000:]
    secrets = sb.path("/etc/fer-agent/secrets.env")
    assert stat.S_IMODE(secrets.stat().st_mode) == 0o600
    assert "FER_MQTT_PASSWORD=s3cret" in secrets.read_text()
    assert "s3cret" not in third.stdout  # no_log
    assert "password_env: FER_MQTT_PASSWORD" in sb.path("/etc/fer-agent/agent.yaml").read_text()
    assert sb.calls().count("systemctl restart fer-agent.service") >= 1


# --------------------------------------------------------------------------- the qnn extra (NPU runtime)

NO_QNN = "no onnxruntime-qnn wheel for it; the agent will use snpe (if the SDK is installed) or tflite"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("board", "qnn", "shipped", "said"),
    [
        (("3.12", "aarch64", "2.39"), "auto", True, "qnn: onnxruntime-qnn from "),
        (("3.10", "aarch64", "2.35"), "auto", False, f"board board-local: Python 3.10 / glibc 2.35: {NO_QNN}"),
        (("3.12", "aarch64", "2.31"), "auto", False, f"board board-local: Python 3.12 / glibc 2.31: {NO_QNN}"),
        (("3.12", "aarch64", "2.39"), False, False, "qnn: off"),  # `fer_agent_qnn: no` in YAML is a boolean
    ],
    ids=["fits", "python-3.10", "glibc-2.31", "off"],
)
def test_check_mode_decides_qnn_from_the_boards_python_and_glibc(tmp_path: Path, board, qnn, shipped, said) -> None:
    sb = make_sandbox(tmp_path)
    py, arch, glibc = board
    inv = _local_inventory(
        tmp_path,
        sb,
        qnn_wheels=True,
        fer_agent_python_version=py,
        fer_agent_arch=arch,
        fer_agent_glibc=glibc,
        fer_agent_qnn=qnn,
    )
    r = _playbook(tmp_path, "--check", inventory=inv)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr
    assert said in r.stdout, r.stdout[-4000:]
    wheels = sorted(p.name.split("-")[0] for p in (tmp_path / "payload" / "wheels").iterdir())
    assert wheels == (["fer_agent", "onnxruntime", "onnxruntime_qnn"] if shipped else ["fer_agent"])


@pytest.mark.slow
def test_qnn_yes_fails_before_building_for_a_board_that_cannot_load_it(tmp_path: Path) -> None:
    sb = make_sandbox(tmp_path)
    inv = _local_inventory(
        tmp_path,
        sb,
        qnn_wheels=True,
        fer_agent_python_version="3.10",
        fer_agent_arch="aarch64",
        fer_agent_glibc="2.35",
        fer_agent_qnn="yes",
    )
    r = _playbook(tmp_path, "--check", inventory=inv)
    assert r.returncode != 0
    assert (
        "board board-local: aarch64, Python 3.10 / glibc 2.35: no onnxruntime-qnn wheel for it (it needs aarch64, "
        "Python >= 3.11 and glibc >= 2.34; fer_agent_qnn: yes)"
    ) in r.stdout, r.stdout[-4000:]
    assert not (tmp_path / "payload").exists()
    bad = _playbook(tmp_path, "--check", "-e", "fer_agent_qnn=maybe", inventory=inv)
    assert bad.returncode != 0 and "fer_agent_qnn: expected auto, yes or no, got 'maybe'" in bad.stdout


def test_qnn_variable_has_a_default_and_reaches_push_sh() -> None:
    role = ANSIBLE / "roles" / "fer_agent"
    assert re.search(r"^fer_agent_qnn: auto\b", (role / "defaults" / "main.yml").read_text(), re.M)
    build = (role / "tasks" / "build.yml").read_text()
    assert "'--qnn', fer_agent_qnn_mode" in build
    assert "version('3.11', '>=')" in build and "version('2.34', '>=')" in build
