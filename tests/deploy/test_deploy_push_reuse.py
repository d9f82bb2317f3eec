"""push.sh: an upgrade whose dependency wheels are those of the board's current release copies only the rest
(wheels.omitted lists what stayed behind) and install.sh reuses the release's dependencies; when it cannot,
push.sh copies the whole payload by itself. Fake ssh runs the 'remote' commands into a throwaway root."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest
from test_deploy_support import DEPLOY, Sandbox, build_fake_wheel, build_named_wheel, make_sandbox

pytestmark = pytest.mark.slow
PUSH = DEPLOY / "push.sh"
REQUIRES = ("fer-fake-dep==1.0", "sympy==1.14.0")


def _push(sb: Sandbox, tmp: Path, version: str, *extra: str, check: bool = True):
    bundle = tmp / "bundle"
    if not bundle.exists():
        bundle.mkdir()
        (bundle / "manifest.json").write_text('{"model_name": "fake"}\n')
    house = tmp / "house"
    if not house.exists():
        build_named_wheel(house, "fer_fake_dep", "1.0")
        build_named_wheel(house, "sympy", "1.14.0")
    wheel = build_fake_wheel(tmp / f"w{version}", version, healthy=True, requires=REQUIRES)
    return sb.run(
        PUSH, "--ssh", "installer@board1", "--bundle", str(bundle), "--wheel", str(wheel), "--wheelhouse", str(house),
        "--remote-dir", str(tmp / "remote-payload"),
        "--remote-cli", str(sb.path("/opt/fer-agent/current/venv/bin/fer-agent")),
        "--health-timeout", "5", "--online-timeout", "5", "--keep-payload", *extra,
        check=check, SSH=str(sb.bin / "ssh"), PYTHON=sys.executable,
    )  # fmt: skip


def _sent(tmp: Path) -> list[str]:
    return sorted(p.name for p in (tmp / "remote-payload" / "wheels").iterdir())


def _current(sb: Sandbox) -> str:
    return os.readlink(sb.path("/opt/fer-agent/current")).split("/")[-1]


def test_an_upgrade_copies_only_what_the_board_does_not_have(tmp_path: Path) -> None:
    sb = make_sandbox(tmp_path)
    first = _push(sb, tmp_path, "1.0")
    assert "leaving out" not in first.stderr and len(_sent(tmp_path)) == 3
    r1 = _current(sb)
    recorded = sb.path(f"/opt/fer-agent/releases/{r1}/.dep-wheels").read_text().splitlines()
    assert [line.split("  ")[1] for line in recorded] == [
        "wheels/fer_fake_dep-1.0-py3-none-any.whl", "wheels/sympy-1.14.0-py3-none-any.whl"
    ]

    up = _push(sb, tmp_path, "1.1")
    assert "push: leaving out the 2 dependency wheels the board's current release has" in up.stderr, up.stderr
    assert f"fer-agent: reusing the dependencies of release {r1} (same 2 wheels)" in up.stderr
    assert _sent(tmp_path) == ["fer_agent-1.1-py3-none-any.whl"]
    assert (tmp_path / "remote-payload" / "wheels.omitted").read_text().splitlines() == recorded
    assert _current(sb).startswith("1.1-") and "healthy: fake 1.1" in up.stderr

    # --full-payload: everything goes, the dependencies are still reused
    full = _push(sb, tmp_path, "1.2", "--full-payload")
    assert "leaving out" not in full.stderr and len(_sent(tmp_path)) == 3
    assert "reusing the dependencies of release 1.1-" in full.stderr


def test_when_the_board_cannot_lend_its_dependencies_the_whole_payload_follows(tmp_path: Path) -> None:
    sb = make_sandbox(tmp_path)
    _push(sb, tmp_path, "1.0")
    r1 = _current(sb)
    site = next(sb.path(f"/opt/fer-agent/releases/{r1}/venv/lib").glob("python3*/site-packages"))
    shutil.rmtree(site / "pip")  # the copy of this venv cannot reinstall the agent
    up = _push(sb, tmp_path, "1.1")
    err = up.stderr.splitlines()
    assert "push: leaving out the 2 dependency wheels" in up.stderr
    assert (
        f"fer-agent: not reusing the dependencies of release {r1} (pip could not reinstall "
        "fer_agent-1.1-py3-none-any.whl into the copy)"
    ) in err
    assert any(line.startswith("fer-agent: error: the payload leaves out 2 dependency wheels") for line in err)
    assert "push: installer@board1 could not reuse its dependencies (above); copying the whole payload" in err
    assert "installing all 2 wheels" in up.stderr and _sent(tmp_path) == sorted(
        ["fer_agent-1.1-py3-none-any.whl", "fer_fake_dep-1.0-py3-none-any.whl", "sympy-1.14.0-py3-none-any.whl"]
    )
    assert _current(sb).startswith("1.1-") and "healthy: fake 1.1" in up.stderr
