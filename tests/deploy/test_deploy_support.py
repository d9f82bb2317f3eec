"""Helpers for the deploy tests: fake wheels, a payload, and recording fakes of
systemctl/useradd/getent/... so install.sh runs into a throwaway DESTDIR.

(Named test_deploy_* only because that is the file pattern this area owns; it
holds no tests itself.)
"""

from __future__ import annotations

import base64
import grp
import hashlib
import json
import os
import pwd
import shutil
import subprocess
import sys
import textwrap
import zipfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
UNIT = REPO / "systemd" / "fer-agent.service"


def _record_line(path: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{path},sha256={digest},{len(data)}"


# What pyproject.toml's `qnn` extra declares (the fake wheels below declare the same).
QNN_EXTRA = ("onnxruntime>=1.24.2", "onnxruntime-qnn>=2.7")


def build_fake_wheel(
    out_dir: Path, version: str, healthy: bool, qnn_extra: bool = False, starts: bool = True, requires: tuple = ()
) -> Path:
    """A pure-Python wheel named fer-agent whose `fer-agent health` is healthy or not.

    Lets the tests install real venvs offline (pip --no-index) in seconds and
    decide per release whether the upgrade passes its health check. With
    ``qnn_extra`` its metadata declares the ``qnn`` extra as pyproject.toml does.
    ``starts=False``: its `fer-agent run` (what the fake systemctl starts) exits 1 at once, as a release
    whose Type=notify start fails. ``requires``: plain Requires-Dist lines (dependencies pip installs with it).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    module = textwrap.dedent(f"""\
        import os, sys
        VERSION = {version!r}
        HEALTHY = {healthy!r}
        STARTS = {starts!r}

        def main():
            args = sys.argv[1:]
            log = os.environ.get("FER_FAKE_CLI_LOG")
            if log:
                with open(log, "a") as fh:
                    fh.write(VERSION + " " + " ".join(args) + "\\n")
            if args[:1] == ["health"] and "--json" in args:
                import json
                msg = ("fake " + VERSION + (" 100 frames" if HEALTHY else " no frames for 45 s"))
                print(json.dumps(dict(healthy=HEALTHY, message=msg, health=dict(broker_connected=True))))
                return 0 if HEALTHY else 1
            if args[:1] == ["health"]:
                if HEALTHY:
                    print("healthy: fake " + VERSION + " 100 frames, broker connected")
                    return 0
                print("unhealthy: fake " + VERSION + " no frames for 45 s")
                return 1
            if args[:1] == ["run"]:
                if STARTS:
                    print("fake " + VERSION + " running")
                    return 0
                print("fake " + VERSION + ": error: backend.type auto: no TFLite runtime installed", file=sys.stderr)
                return 1
            if args[:1] == ["check-config"]:
                if "bogus_key" in open(args[1]).read():
                    print("error: " + args[1] + ": bogus_key: unknown key", file=sys.stderr)
                    return 2
                print(args[1] + ": ok")
                return 0
            if args[:1] == ["--version"]:
                print(VERSION)
                return 0
            return 0
        """).encode()
    metadata = f"Metadata-Version: 2.1\nName: fer-agent\nVersion: {version}\n"
    metadata += "".join(f"Requires-Dist: {req}\n" for req in requires)
    if qnn_extra:
        metadata += "Provides-Extra: qnn\n" + "".join(
            f'Requires-Dist: {req}; python_version >= "3.11" and extra == "qnn"\n' for req in QNN_EXTRA
        )
    return _write_wheel(
        out_dir,
        "fer_agent",
        version,
        {"fer_agent_fake.py": module, "fer_agent_fake_suite/tests/test_it.py": b"def test_it():\n    pass\n"},
        metadata,
        b"[console_scripts]\nfer-agent = fer_agent_fake:main\n",
    )


def build_named_wheel(out_dir: Path, name: str, version: str) -> Path:
    """A tiny pure-Python stand-in for a dependency wheel (e.g. onnxruntime_qnn), with one module of that name."""
    out_dir.mkdir(parents=True, exist_ok=True)
    metadata = f"Metadata-Version: 2.1\nName: {name.replace('_', '-')}\nVersion: {version}\n"
    return _write_wheel(out_dir, name, version, {f"{name}/__init__.py": f"STAND_IN = {version!r}\n".encode()}, metadata)


def _write_wheel(
    out_dir: Path, name: str, version: str, modules: dict[str, bytes], metadata: str, entry_points: bytes | None = None
) -> Path:
    dist = f"{name}-{version}.dist-info"
    files = dict(modules)
    files[f"{dist}/METADATA"] = metadata.encode()
    files[f"{dist}/WHEEL"] = b"Wheel-Version: 1.0\nGenerator: fer-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    if entry_points is not None:
        files[f"{dist}/entry_points.txt"] = entry_points
    record = [_record_line(p, d) for p, d in files.items()] + [f"{dist}/RECORD,,"]
    files[f"{dist}/RECORD"] = ("\n".join(record) + "\n").encode()
    wheel = out_dir / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for path, data in files.items():
            # a fixed time: the same wheel built twice is the same file (install.sh compares sha256s)
            zf.writestr(zipfile.ZipInfo(path, date_time=(2024, 1, 1, 0, 0, 0)), data)
    return wheel


def make_payload(
    tmp: Path,
    version: str,
    healthy: bool = True,
    config_comment: str = "",
    qnn: bool = False,
    starts: bool = True,
    dep: str = "",
) -> Path:
    """A payload directory laid out as push.sh --stage-only makes it; with ``qnn`` as for a board that can load
    onnxruntime-qnn (the agent wheel declares the extra; stand-ins for the onnxruntime(-qnn) wheels beside it).
    ``dep``: a version of a stand-in dependency (fer_fake_dep) that the agent wheel requires, shipped beside it
    with a stand-in for sympy (one that install.sh does not byte-compile: the service never imports it)."""
    p = tmp / f"payload-{version}"
    (p / "bundle").mkdir(parents=True)
    requires = (f"fer-fake-dep=={dep}", "sympy==1.14.0") if dep else ()
    build_fake_wheel(p / "wheels", version, healthy, qnn_extra=qnn, starts=starts, requires=requires)
    if dep:
        build_named_wheel(p / "wheels", "fer_fake_dep", dep)
        build_named_wheel(p / "wheels", "sympy", "1.14.0")
    if qnn:
        build_named_wheel(p / "wheels", "onnxruntime", "1.24.2")
        build_named_wheel(p / "wheels", "onnxruntime_qnn", "2.7.0")
    (p / "bundle" / "manifest.json").write_text(json.dumps({"model_name": "fake", "model_version": version}) + "\n")
    (p / "bundle" / "model.tflite").write_bytes(b"\0" * 64)
    shutil.copy(UNIT, p / "fer-agent.service")
    shutil.copytree(DEPLOY / "config", p / "config")
    if config_comment:
        with open(p / "config" / "agent.yaml", "a") as fh:
            fh.write(f"# {config_comment}\n")
        with open(p / "config" / "snpe.env", "a") as fh:
            fh.write(f"# {config_comment}\n")
    for s in ("install.sh", "rollback.sh", "uninstall.sh", "lib.sh"):
        shutil.copy2(DEPLOY / s, p / s)
    shutil.copy(REPO / "docs" / "deploy.md", p / "deploy.md")
    (p / "VERSION").write_text(version + "\n")
    return p


FAKE_TOOLS = {
    # Each fake appends "name args" to $FAKE_LOG; state lives in $FAKE_DB.
    "systemctl": r"""
        verb=$1; shift
        case $verb in
            is-enabled) [[ "$1" == --quiet ]] && shift; [[ -f "$FAKE_DB/enabled.$1" ]]; exit ;;
            is-active) [[ "$1" == --quiet ]] && shift; [[ -f "$FAKE_DB/active.$1" ]]; exit ;;
            is-failed) exit 1 ;;
        esac
        echo "systemctl $verb${*:+ $*}" >>"$FAKE_LOG"
        case $verb in
            enable) touch "$FAKE_DB/enabled.$1" ;;
            start|restart)
                # ExecStart of the release `current` points at; its output goes to the fake journal. A start
                # that fails fails the command, as systemctl does for a Type=notify unit.
                cli="${DESTDIR:-}/opt/fer-agent/current/venv/bin/fer-agent"
                if [[ -x "$cli" ]] && ! "$cli" run >>"$FAKE_DB/journal" 2>&1; then
                    rm -f "$FAKE_DB/active.$1"
                    echo "Job for $1 failed because the control process exited with error code." >&2
                    echo "See \"systemctl status $1\" and \"journalctl -xeu $1\" for details." >&2
                    exit 1
                fi
                touch "$FAKE_DB/active.$1" ;;
            disable) if [[ "$1" == --now ]]; then shift; rm -f "$FAKE_DB/active.$1"; fi; rm -f "$FAKE_DB/enabled.$1" ;;
            stop) rm -f "$FAKE_DB/active.$1" ;;
        esac
        exit 0
    """,
    "journalctl": r"""
        # journalctl --unit U [--since @T] --lines N ...: the last N lines of the fake journal
        echo "journalctl $*" >>"$FAKE_LOG"
        n=10
        while (($#)); do case $1 in --lines|-n) n=$2; shift 2 ;; *) shift ;; esac; done
        tail -n "$n" "$FAKE_DB/journal" 2>/dev/null || true
    """,
    "getent": r"""
        db=$1 key=$2
        grep -E "^${key}:" "$FAKE_DB/$db" 2>/dev/null
    """,
    "groupadd": r"""
        echo "groupadd $*" >>"$FAKE_LOG"
        echo "${@: -1}:x:990:" >>"$FAKE_DB/group"
    """,
    "useradd": r"""
        echo "useradd $*" >>"$FAKE_LOG"
        echo "${@: -1}:x:990:990::/var/lib/fer-agent:/usr/sbin/nologin" >>"$FAKE_DB/passwd"
    """,
    "usermod": r"""
        echo "usermod $*" >>"$FAKE_LOG"
        group=$3 user=$4
        sed -i -E "s/^(${group}:[^:]*:[^:]*:)(.*)$/\1\2,${user}/; s/^(${group}:[^:]*:[^:]*:),/\1/" "$FAKE_DB/group"
    """,
    "userdel": r"""
        echo "userdel $*" >>"$FAKE_LOG"
        sed -i "/^$1:/d" "$FAKE_DB/passwd"
    """,
    "groupdel": r"""
        echo "groupdel $*" >>"$FAKE_LOG"
        sed -i "/^$1:/d" "$FAKE_DB/group"
    """,
    "ssh": r"""
        # ssh [opts] HOST COMMAND: run COMMAND here (stdin passes through, for tar)
        cmd=${@: -1}; host=${@: -2:1}
        echo "ssh $host $cmd" >>"$FAKE_LOG"
        exec bash -c "$cmd"
    """,
    "adb": r"""
        [[ "$1" == -s ]] && { serial=$2; shift 2; }
        verb=$1; shift
        echo "adb ${serial:-} $verb $*" >>"$FAKE_LOG"
        case $verb in
            shell) exec bash -c "$*" ;;
            push) mkdir -p "$2"; cp -R "$1" "$2/" 2>/dev/null || cp -R "$1"/. "$2"/ ;;
        esac
    """,
    "sudo": r"""
        [[ "$1" == -n ]] && shift
        exec "$@"
    """,
    "chown": r"""
        echo "chown $*" >>"$FAKE_LOG"
        exec /bin/chown "$@"
    """,
}


@dataclass
class Sandbox:
    """A throwaway root plus recording fakes; run() executes a deploy script in it."""

    root: Path
    db: Path
    log: Path
    bin: Path
    env: dict[str, str]

    def run(self, script: str | Path, *args: str, check: bool = True, **extra_env: str) -> subprocess.CompletedProcess:
        env = dict(self.env, **extra_env)
        proc = subprocess.run(
            ["bash", str(script), *args], env=env, check=False, capture_output=True, text=True, timeout=300
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"{script} {args} exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
            )
        return proc

    def calls(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []

    def clear_calls(self) -> None:
        self.log.write_text("")

    def path(self, p: str) -> Path:
        return self.root / p.lstrip("/")


def make_sandbox(tmp: Path) -> Sandbox:
    root, db, fakebin = tmp / "root", tmp / "db", tmp / "fakebin"
    for d in (root, db, fakebin):
        d.mkdir(parents=True)
    (db / "passwd").write_text("root:x:0:0::/root:/bin/bash\n")
    # the board has video and render groups, but no fastrpc group
    (db / "group").write_text("video:x:44:\nrender:x:109:someone\n")
    for name, body in FAKE_TOOLS.items():
        f = fakebin / name
        f.write_text("#!/usr/bin/env bash\nset -euo pipefail\n" + textwrap.dedent(body))
        f.chmod(0o755)
    user, group = pwd.getpwuid(os.geteuid()).pw_name, grp.getgrgid(os.getegid()).gr_name
    log = tmp / "calls.log"
    env = {
        "PATH": f"{fakebin}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "HOME": str(tmp),
        "LANG": "C.UTF-8",
        "DESTDIR": str(root),
        "FAKE_DB": str(db),
        "FAKE_LOG": str(log),
        "SYSTEMCTL": str(fakebin / "systemctl"),
        "JOURNALCTL": str(fakebin / "journalctl"),
        "USERADD": str(fakebin / "useradd"),
        "GROUPADD": str(fakebin / "groupadd"),
        "USERMOD": str(fakebin / "usermod"),
        "USERDEL": str(fakebin / "userdel"),
        "GROUPDEL": str(fakebin / "groupdel"),
        "GETENT": str(fakebin / "getent"),
        "CHOWN": str(fakebin / "chown"),
        "PYTHON": sys.executable,
        # ownership the test user can give without privileges; the group of the
        # service user is faked as the test user's group for the same reason
        "OWNER_ROOT": f"{user}:{group}",
        "SERVICE_USER": "fer-agent",
        "SERVICE_GROUP": group,
        "HEALTH_INTERVAL": "0.2",
        "PIP_NO_INDEX": "1",
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    }
    return Sandbox(root=root, db=db, log=log, bin=fakebin, env=env)


def snapshot(root: Path) -> dict[str, tuple]:
    """Everything a second install must leave alone: content, mode, owner, times, link targets."""
    out: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            rel = str(p.relative_to(root))
            if p.is_symlink():
                out[rel] = ("link", os.readlink(p))
            elif p.is_dir():
                out[rel] = ("dir", st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns, st.st_ctime_ns)
            else:
                out[rel] = ("file", st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns, st.st_ctime_ns, st.st_size)
    return out


MUTATING = (
    "systemctl daemon-reload",
    "systemctl enable",
    "systemctl start",
    "systemctl restart",
    "useradd",
    "groupadd",
    "usermod",
    "chown",
)
