"""systemd/fer-agent.service: systemd-analyze verify, exposure score, and the directives the agent relies on.

`verify` checks that ExecStart's binary exists; on a development machine
/opt/fer-agent is not installed, so the unchanged unit is verified inside a
temporary root (`--root=`) that holds the unit, a stand-in executable at the
ExecStart path and a copy of this machine's own units (sysinit.target etc.).
"""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "systemd" / "fer-agent.service"
MAX_EXPOSURE = 2.0

ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze not installed (apt install systemd)")


def _systemd_version() -> int:
    out = subprocess.run([ANALYZE, "--version"], check=False, capture_output=True, text=True).stdout
    m = re.search(r"systemd (\d+)", out)
    return int(m.group(1)) if m else 0


def _directives(text: str) -> list[tuple[str, str, str]]:
    """(section, key, value) in file order; repeated keys kept (configparser would merge them)."""
    out, section = [], ""
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        out.append((section, key.strip(), value.strip()))
    return out


def _values(key: str) -> list[str]:
    return [v for _, k, v in _directives(UNIT.read_text()) if k == key]


def _verify_root(tmp: Path, unit_text: str) -> Path:
    root = tmp / "root"
    exec_start = _values("ExecStart")[0].split()[0]
    exe = root / exec_start.lstrip("/")
    exe.parent.mkdir(parents=True)
    exe.write_text("#!/bin/sh\nexit 0\n")
    exe.chmod(0o755)
    (root / "etc/systemd/system").mkdir(parents=True)
    (root / "etc/systemd/system/fer-agent.service").write_text(unit_text)
    for system_units in (Path("/lib/systemd/system"), Path("/usr/lib/systemd/system")):
        if system_units.is_dir():
            shutil.copytree(system_units, root / "usr/lib/systemd/system", symlinks=True, dirs_exist_ok=True)
            break
    return root


def _verify(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [ANALYZE, "verify", f"--root={root}", "fer-agent.service"],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )


@needs_analyze
def test_verify_reports_nothing(tmp_path: Path) -> None:
    r = _verify(_verify_root(tmp_path, UNIT.read_text()))
    assert r.returncode == 0 and r.stdout.strip() == "" and r.stderr.strip() == "", r.stdout + r.stderr


@needs_analyze
def test_verify_would_catch_a_broken_unit(tmp_path: Path) -> None:
    """The verify set-up above is able to fail: a typo'd directive and a missing binary are reported."""
    broken = UNIT.read_text().replace("DevicePolicy=closed", "DevicePolicy=closed\nDeviceAlow=/dev/video0 rw")
    r = _verify(_verify_root(tmp_path / "a", broken))
    assert "DeviceAlow" in r.stderr
    root = _verify_root(tmp_path / "b", UNIT.read_text())
    exe = root / _values("ExecStart")[0].split()[0].lstrip("/")
    exe.unlink()
    r = _verify(root)
    assert r.returncode != 0 and "is not executable" in r.stderr


@needs_analyze
def test_exposure_at_most_2(tmp_path: Path) -> None:
    if _systemd_version() < 252:
        pytest.skip("systemd-analyze security --offline=true needs systemd >= 252")
    r = subprocess.run(
        [ANALYZE, "security", "--offline=true", str(UNIT)], check=False, capture_output=True, text=True, timeout=60
    )
    m = re.search(r"Overall exposure level for fer-agent\.service: (\d+\.\d+)", r.stdout)
    assert m, r.stdout[-2000:] + r.stderr
    exposure = float(m.group(1))
    assert exposure <= MAX_EXPOSURE, f"exposure {exposure} > {MAX_EXPOSURE}\n{r.stdout}"


def test_parses_as_ini_with_the_three_sections() -> None:
    cp = configparser.ConfigParser(strict=False, interpolation=None)
    cp.read_string(UNIT.read_text())
    assert cp.sections() == ["Unit", "Service", "Install"]


def test_notify_watchdog_restart_policy() -> None:
    d = {(s, k): v for s, k, v in _directives(UNIT.read_text())}
    assert d[("Service", "Type")] == "notify"
    assert d[("Service", "NotifyAccess")] == "main"
    assert int(d[("Service", "WatchdogSec")]) >= 10
    assert d[("Service", "Restart")] == "on-failure"
    assert int(d[("Unit", "StartLimitBurst")]) <= 10 and d[("Unit", "StartLimitIntervalSec")]
    assert (
        d[("Service", "ExecStart")]
        == "/opt/fer-agent/current/venv/bin/fer-agent run --config /etc/fer-agent/agent.yaml"
    )
    assert d[("Service", "User")] == "fer-agent"
    assert "video" in d[("Service", "SupplementaryGroups")].split()
    assert d[("Service", "StateDirectory")] == "fer-agent"
    assert d[("Service", "RuntimeDirectory")] == "fer-agent"
    assert d[("Install", "WantedBy")] == "multi-user.target"
    envfiles = _values("EnvironmentFile")
    assert "-/etc/fer-agent/secrets.env" in envfiles and "-/etc/fer-agent/snpe.env" in envfiles
    assert not any(
        k.startswith(("StandardOutput", "StandardError")) and "file:" in v for _, k, v in _directives(UNIT.read_text())
    ), "logs go to journald"


def test_runtime_directory_matches_the_health_file_default() -> None:
    """`fer-agent health` run by a person looks in /run/<RuntimeDirectory>/health.json."""
    from agent import service

    assert service.SYSTEM_RUNTIME_DIR == Path("/run") / _values("RuntimeDirectory")[0]
    assert str(service.SYSTEM_CONFIG) in _values("ExecStart")[0]


def test_every_device_allow_is_commented_and_covers_camera_and_accelerators() -> None:
    lines = UNIT.read_text().splitlines()
    allowed = []
    for i, line in enumerate(lines):
        if line.startswith("DeviceAllow="):
            allowed.append(line.split("=", 1)[1].split()[0])
            j = i - 1
            while lines[j].startswith("DeviceAllow="):
                j -= 1
            assert lines[j].startswith("#"), f"DeviceAllow at line {i + 1} has no comment above it"
    for needed in (
        "char-video4linux",
        "char-dma_heap",
        "/dev/ion",
        "/dev/fastrpc-cdsp",
        "/dev/fastrpc-adsp",
        "char-adsprpc-smd",
        "/dev/kgsl-3d0",
    ):
        assert needed in allowed, needed
    assert len(allowed) == len(set(allowed)), "a DeviceAllow= appears twice"
    assert _values("DevicePolicy") == ["closed"]
    assert _values("PrivateDevices") == []  # would hide the camera


def test_hardening_essentials() -> None:
    for key, value in {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "CapabilityBoundingSet": "",
        "MemoryDenyWriteExecute": "yes",
        "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
    }.items():
        assert _values(key) == [value], key


def test_the_qnn_htp_reaches_what_libcdsprpc_opens() -> None:
    """The qnn runtime (QNN HTP in-process) goes through the board's libcdsprpc.so (qualcomm/fastrpc): it opens
    /dev/fastrpc-cdsp-secure, else /dev/fastrpc-cdsp (cdsp1: the second NSP of two-NSP SoCs), and allocates from
    /dev/dma_heap/system (the "dma_heap" device group); read-only reads of /sys (soc_id) and of the skel
    directories are all it needs, so ProtectKernelTunables/ProtectSystem=strict stay."""
    rw = {v.split()[0]: v.split()[1] for v in _values("DeviceAllow")}
    for node in (
        "/dev/fastrpc-cdsp",
        "/dev/fastrpc-cdsp-secure",
        "/dev/fastrpc-cdsp1",
        "/dev/fastrpc-cdsp1-secure",
        "char-dma_heap",
        "/dev/ion",
    ):
        assert rw.get(node) == "rw", node
    assert _values("ProtectKernelTunables") == ["yes"] and _values("ProtectSystem") == ["strict"]
    for key in ("InaccessiblePaths", "ProcSubset", "TemporaryFileSystem"):
        assert _values(key) == [], key  # would hide /sys/devices/soc0, /usr/lib/rfsa/adsp or the venv
    # the agent sets ADSP_LIBRARY_PATH itself (agent/contracts/qnn.py); the unit says so and does not set it
    assert not any("ADSP_LIBRARY_PATH" in v for v in _values("Environment"))
    text = UNIT.read_text()
    assert "ADSP_LIBRARY_PATH" in text and "/usr/lib/rfsa/adsp" in text
