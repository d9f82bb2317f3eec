"""install.sh: an upgrade whose dependency wheels did not change reuses the installed release's dependencies
(a hard-link copy of its venv, only the agent wheel reinstalled) and leaves that release exactly as it was.

Real venvs from tiny fake wheels, as in test_deploy_install.py; fer_fake_dep stands in for numpy & co.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_deploy_support import Sandbox, make_payload, make_sandbox

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("bash") is None, reason="bash not available"),
]


def _venv(sb: Sandbox, release: str) -> Path:
    return sb.path(f"/opt/fer-agent/releases/{release}/venv")


def _site(sb: Sandbox, release: str) -> Path:
    return next((_venv(sb, release) / "lib").glob("python3*/site-packages"))


def _tree(root: Path) -> dict[str, tuple]:
    """Every file's content (sha256) and mode, every link's target: what the other release must keep."""
    out: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            if p.is_symlink():
                out[rel] = ("link", os.readlink(p))
            elif p.is_file():
                out[rel] = ("file", hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mode)
            else:
                out[rel] = ("dir", p.stat().st_mode)
    return out


def _cli(sb: Sandbox, release: str, *args: str) -> str:
    cli = _venv(sb, release) / "bin/fer-agent"
    return subprocess.run([str(cli), *args], check=True, capture_output=True, text=True).stdout.strip()


def _reuse_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "reusing the dependencies" in line]


def test_same_dependencies_are_reused_and_the_old_release_is_untouched(tmp_path: Path) -> None:
    sb = make_sandbox(tmp_path)
    first = sb.run(make_payload(tmp_path, "1.0", dep="1.0") / "install.sh", "--health-timeout", "5")
    assert not _reuse_lines(first.stderr)  # nothing installed yet: the full install
    # byte-compiled at install, but not what the service never imports (sympy)
    assert list((_site(sb, "1.0") / "fer_fake_dep/__pycache__").glob("__init__.*.pyc"))
    assert not list((_site(sb, "1.0") / "sympy").rglob("*.pyc"))
    # pip came from the wheel ensurepip uses, not byte-compiled: only what pip itself imported has a .pyc
    assert not _pip_list_compiled(sb, "1.0")
    old = _tree(_venv(sb, "1.0"))

    up = sb.run(make_payload(tmp_path, "1.1", dep="1.0") / "install.sh", "--health-timeout", "5")
    assert _reuse_lines(up.stderr) == [
        "fer-agent: reusing the dependencies of release 1.0 (same 2 wheels); installed "
        "fer_agent-1.1-py3-none-any.whl only"
    ], up.stderr
    assert "healthy: fake 1.1" in up.stderr
    opt = sb.path("/opt/fer-agent")
    assert os.readlink(opt / "current") == "releases/1.1" and os.readlink(opt / "previous") == "releases/1.0"

    # the dependency is shared (one inode), the agent is not
    dep_old, dep_new = _site(sb, "1.0") / "fer_fake_dep/__init__.py", _site(sb, "1.1") / "fer_fake_dep/__init__.py"
    assert os.stat(dep_old).st_ino == os.stat(dep_new).st_ino
    agent_old, agent_new = _site(sb, "1.0") / "fer_agent_fake.py", _site(sb, "1.1") / "fer_agent_fake.py"
    assert os.stat(agent_old).st_ino != os.stat(agent_new).st_ino
    assert "VERSION = '1.1'" in agent_new.read_text()

    # the new console script runs the new venv's Python; the old release is byte for byte what it was
    new_bin = _venv(sb, "1.1") / "bin"
    assert (new_bin / "fer-agent").read_text().splitlines()[0] == f"#!{new_bin}/python"
    assert str(_venv(sb, "1.0")) not in (new_bin / "activate").read_text()
    assert _cli(sb, "1.1", "--version") == "1.1" and _cli(sb, "1.0", "--version") == "1.0"
    assert _tree(_venv(sb, "1.0")) == old
    # the new agent is byte-compiled (the release is read-only to the service), its test suite is not
    assert list((_site(sb, "1.1") / "__pycache__").glob("fer_agent_fake.*.pyc"))
    assert not list((_site(sb, "1.1") / "fer_agent_fake_suite").rglob("*.pyc"))
    import_dep = [str(new_bin / "python"), "-c", "import fer_fake_dep; print(fer_fake_dep.STAND_IN)"]
    assert subprocess.run(import_dep, check=True, capture_output=True, text=True).stdout.strip() == "1.0"

    # rollback and back again: both releases run
    sb.run(opt / "current/deploy/rollback.sh", "--health-timeout", "5")
    assert os.readlink(opt / "current") == "releases/1.0" and _cli(sb, "1.0", "--version") == "1.0"
    sb.run(opt / "current/deploy/rollback.sh", "--health-timeout", "5")
    assert os.readlink(opt / "current") == "releases/1.1"

    # a third release reuses current's; pruning the release the inodes came from breaks neither that remains
    third = sb.run(make_payload(tmp_path, "1.2", dep="1.0") / "install.sh", "--health-timeout", "5", "--keep", "2")
    assert "reusing the dependencies of release 1.1" in third.stderr and "removed old release 1.0" in third.stderr
    assert not _venv(sb, "1.0").exists()
    for release in ("1.1", "1.2"):
        assert _cli(sb, release, "--version") == release
        out = subprocess.run([str(_venv(sb, release) / "bin/python"), *import_dep[1:]], capture_output=True, text=True)
        assert out.stdout.strip() == "1.0", out.stderr


def test_changed_dependencies_take_the_full_install(tmp_path: Path) -> None:
    sb = make_sandbox(tmp_path)
    sb.run(make_payload(tmp_path, "1.0", dep="1.0") / "install.sh", "--health-timeout", "5")
    up = sb.run(make_payload(tmp_path, "1.1", dep="2.0") / "install.sh", "--health-timeout", "5")
    assert not _reuse_lines(up.stderr) and "not reusing" not in up.stderr
    dep_old, dep_new = _site(sb, "1.0") / "fer_fake_dep/__init__.py", _site(sb, "1.1") / "fer_fake_dep/__init__.py"
    assert os.stat(dep_old).st_ino != os.stat(dep_new).st_ino
    assert "'2.0'" in dep_new.read_text() and "'1.0'" in dep_old.read_text()
    assert _cli(sb, "1.1", "--version") == "1.1"


def test_a_failing_reuse_falls_back_to_the_full_install_with_one_line(tmp_path: Path) -> None:
    sb = make_sandbox(tmp_path)
    sb.run(make_payload(tmp_path, "1.0", dep="1.0") / "install.sh", "--health-timeout", "5")
    # the installed release's venv has lost its pip: the copy cannot reinstall the agent
    shutil.rmtree(next(_site(sb, "1.0").glob("pip")))
    up = sb.run(make_payload(tmp_path, "1.1", dep="1.0") / "install.sh", "--health-timeout", "5")
    why = [line for line in up.stderr.splitlines() if line.startswith("fer-agent: not reusing")]
    assert why == [
        "fer-agent: not reusing the dependencies of release 1.0 (pip could not reinstall "
        "fer_agent-1.1-py3-none-any.whl into the copy); installing all 2 wheels"
    ], up.stderr
    assert os.stat(_site(sb, "1.1") / "fer_fake_dep/__init__.py").st_ino != os.stat(
        _site(sb, "1.0") / "fer_fake_dep/__init__.py"
    ).st_ino
    assert _cli(sb, "1.1", "--version") == "1.1" and os.readlink(sb.path("/opt/fer-agent/current")) == "releases/1.1"


def _pip_list_compiled(sb: Sandbox, release: str) -> bool:
    """`pip list`, which installing never imports, has a .pyc only when all of pip was byte-compiled."""
    return bool(list((_site(sb, release) / "pip/_internal/commands/__pycache__").glob("list.*.pyc")))


def test_without_the_bootstrap_wheels_the_venv_gets_pip_from_ensurepip(tmp_path: Path) -> None:
    sb = make_sandbox(tmp_path)
    board_python = tmp_path / "board-python"  # a Python whose ensurepip wheels cannot be found
    board_python.write_text(f"""#!/usr/bin/env bash
if [[ "$1" == - ]] && grep -q ensurepip; then exit 1; fi
exec {sys.executable} "$@"
""")
    board_python.chmod(0o755)
    r = sb.run(make_payload(tmp_path, "1.0", dep="1.0") / "install.sh", "--health-timeout", "5",
               PYTHON=str(board_python))
    assert "healthy: fake 1.0" in r.stderr
    assert _pip_list_compiled(sb, "1.0")  # ensurepip compiles all of pip
    assert _cli(sb, "1.0", "--version") == "1.0"
