"""The health file the agent writes and ``fer-agent health`` reads.

* :class:`HealthReporter` keeps a small JSON snapshot (last frame, broker,
  outbox, pid) in the runtime directory, written atomically and rate-limited
  so the frame loop can call it every frame.
* :func:`check_health` / :func:`health_command` read it: exit 0 healthy,
  1 unhealthy with the reason, 2 bad config. ``push.sh`` and the automatic
  rollback decide on this, so a killed agent must read as unhealthy at once:
  the recorded process is checked to be alive and to be the same process
  (its start time, since pids are reused), not only the file's age.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent.service import HEALTH_FORMAT_VERSION, SYSTEM_CONFIG, ServiceConfig, resolve_health_file

log = logging.getLogger(__name__)


def process_start(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot (``/proc/<pid>/stat`` field 22), None if unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    try:  # the command name (field 2) may hold spaces and parentheses: split after the last ')'
        return int(stat[stat.rindex(")") + 2 :].split()[19])
    except (ValueError, IndexError):
        return None


_PID_START = process_start(os.getpid())


def _process_gone(pid: Any, pid_start: Any) -> str | None:
    """Why the agent that wrote the file is not running any more, or None when it is (or cannot be told)."""
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return None  # a file from an older agent without a pid: judge it by its age alone
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return f"agent process {pid} is not running"
    except PermissionError:
        pass  # alive, owned by another user (the service user); start time still tells reuse
    if isinstance(pid_start, int) and Path("/proc/self/stat").exists():
        now_start = process_start(pid)
        if now_start is None:
            return f"agent process {pid} is not running"
        if now_start != pid_start:
            return f"agent process {pid} is not running (the pid now belongs to another process)"
    return None


def _to_wall(t: float, wall: float, mono: float) -> float:
    """Accept ``time.monotonic()`` by mistake: a value below 1e9 s (2001) cannot be wall time."""
    if t < 1e9:
        return wall - (mono - t)
    return t


class HealthReporter:
    """Writes the health snapshot ``fer-agent health`` reads.

    ``update()`` is called every frame; it only remembers its arguments and
    writes at most every ``interval_s`` (sooner, but at most every ``MIN_GAP_S``,
    when the broker connects or disconnects or the status text changes), by write-and-rename so a reader
    never sees half a file. Write errors are logged once and never raised.
    """

    MIN_GAP_S = 0.5

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        interval_s: float = 2.0,
        broker_grace_s: float = 60.0,
        wall_clock: Callable[[], float] = time.time,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = Path(path)
        self.interval_s = interval_s
        self.broker_grace_s = broker_grace_s
        self._wall = wall_clock
        self._clock = clock
        self._started = wall_clock()
        self._next_write = -math.inf
        self._last_write = -math.inf
        self._dirty = False
        self._warned = False
        self._connected: bool | None = None
        self._broker_down_since: float | None = self._started  # not connected until told so
        self._status = ""
        self._problems: list[str] = []
        self._last_written_depth: int | None = None
        self._last_drain: float | None = None
        self._prev_depth: int | None = None
        self._frames_at_write = 0
        self._mono_at_write: float | None = None
        self.writes = 0

    def update(
        self,
        last_frame_time: float,
        frames: int,
        broker_connected: bool,
        outbox_depth: int,
        backend: str,
        status: str,
        problems: list[str] | tuple[str, ...] = (),
    ) -> bool:
        """Record the latest numbers; returns True when the file was written this call.

        ``problems``: what is degraded now (a full disk, messages the broker refuses, a source being retried),
        one short text each; ``fer-agent health`` prints them.
        """
        now = self._clock()
        if list(problems) != self._problems:
            self._problems = list(problems)
            self._dirty = True
        if broker_connected != self._connected:
            self._connected = broker_connected
            self._broker_down_since = None if broker_connected else self._wall()
            self._dirty = True
        if status != self._status:
            self._status = status
            self._dirty = True
        prev = self._prev_depth
        if prev is not None and outbox_depth < prev:
            self._last_drain = now
        self._prev_depth = outbox_depth
        # A change is written soon, but never more often than MIN_GAP_S: a status
        # that flips every frame (frame / "waiting for frames") must not turn
        # every frame into a file write.
        due = now >= self._next_write or (self._dirty and now - self._last_write >= self.MIN_GAP_S)
        if not due:
            return False
        self._next_write = now + self.interval_s
        self._last_write = now
        self._dirty = False
        return self._write(now, last_frame_time, frames, broker_connected, outbox_depth, backend, status)

    def _write(
        self, now: float, last_frame_time: float, frames: int, connected: bool, depth: int, backend: str, status: str
    ) -> bool:
        wall = self._wall()
        fps = None
        if self._mono_at_write is not None and now > self._mono_at_write:
            fps = round((frames - self._frames_at_write) / (now - self._mono_at_write), 2)
        self._mono_at_write, self._frames_at_write = now, frames
        last = self._last_written_depth
        trend = "steady" if last is None or depth == last else ("growing" if depth > last else "draining")
        if depth == 0:
            trend = "empty"
        self._last_written_depth = depth
        data: dict[str, Any] = {
            "version": HEALTH_FORMAT_VERSION,
            "pid": os.getpid(),
            "pid_start": _PID_START,
            "started": self._started,
            "written": wall,
            "last_frame_time": _to_wall(float(last_frame_time), wall, now) if last_frame_time else None,
            "frames": int(frames),
            "fps": fps,
            "broker_connected": bool(connected),
            "broker_down_since": self._broker_down_since,
            "broker_grace_s": self.broker_grace_s,
            "outbox_depth": int(depth),
            "outbox_trend": trend,
            "outbox_last_drain": wall - (now - self._last_drain) if self._last_drain is not None else None,
            "backend": backend,
            "status": status,
            "problems": self._problems,
        }
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(data, fh, separators=(",", ":"))
            os.replace(tmp, self.path)
        except OSError as exc:
            if not self._warned:
                log.warning("cannot write health file %s: %s", self.path, exc)
                self._warned = True
            return False
        self.writes += 1
        return True

    def close(self, remove: bool = True) -> None:
        """On shutdown: remove the file so ``fer-agent health`` says 'not running' rather than 'stale'."""
        if remove:
            try:
                self.path.unlink()
            except OSError:
                pass


def _age(now: float, t: float | None) -> float | None:
    return None if t is None else max(0.0, now - t)


def check_health(
    path: str | os.PathLike[str],
    max_age_s: float,
    *,
    broker_grace_s: float | None = None,
    now: float | None = None,
) -> tuple[bool, str]:
    """Healthy when frames are recent and (broker connected or outbox draining).

    A broker outage shorter than ``broker_grace_s`` (default: what the agent
    wrote into the file) still counts as healthy: paho reconnects on its own
    and the outbox keeps the events. Returns ``(healthy, one-line summary or reason)``.
    """
    ok, message, _ = _evaluate(Path(path), max_age_s, broker_grace_s, now)
    return ok, message


def _evaluate(
    path: Path, max_age_s: float, broker_grace_s: float | None, now: float | None
) -> tuple[bool, str, dict[str, Any] | None]:
    now = time.time() if now is None else now
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return False, f"agent not running or health file missing: {path}", None
    except OSError as exc:
        return False, f"cannot read health file {path}: {exc.strerror or exc} (try sudo)", None
    try:
        data = json.loads(text)
        if not isinstance(data, dict):
            raise TypeError("not a JSON object")
        written = float(data["written"])
        frames = int(data["frames"])
        connected = bool(data["broker_connected"])
        depth = int(data["outbox_depth"])
    except (ValueError, KeyError, TypeError) as exc:
        return False, f"health file {path} is malformed: {exc}", None
    dead = _process_gone(data.get("pid"), data.get("pid_start"))
    if dead:
        return False, dead, data
    if broker_grace_s is None:
        broker_grace_s = float(data.get("broker_grace_s") or 60.0)

    last_frame = data.get("last_frame_time")
    frame_age = _age(now, float(last_frame) if last_frame else None)
    written_age = _age(now, written) or 0.0
    backend = data.get("backend") or "?"
    status = data.get("status") or ""

    if frame_age is None:
        started_age = _age(now, data.get("started")) or written_age
        problems = "".join(f"; {p}" for p in degraded(data))
        return (
            False,
            f"no frame processed yet ({frames} frames, agent started {started_age:.0f} s ago, status: {status or '-'})"
            + problems,
            data,
        )
    if frame_age > max_age_s:
        hint = " (health file not updated either: agent hung or stopped?)" if written_age > max_age_s else ""
        return False, f"no frames for {frame_age:.0f} s (limit {max_age_s:g} s){hint}; status: {status or '-'}", data

    trend = data.get("outbox_trend") or "steady"
    down_since = data.get("broker_down_since")
    down_for = _age(now, float(down_since)) if down_since else None
    last_drain_age = _age(now, data.get("outbox_last_drain"))
    if connected:
        broker = f"broker connected, outbox {depth}"
    elif down_for is not None and down_for <= broker_grace_s:
        broker = f"broker reconnecting ({down_for:.0f} s), outbox {depth}"
    elif trend == "draining" or (
        last_drain_age is not None and last_drain_age <= broker_grace_s and trend != "growing"
    ):
        broker = f"broker disconnected, outbox draining ({depth})"
    else:
        down = f" for {down_for:.0f} s" if down_for is not None else ""
        what = "growing" if trend == "growing" else "not draining"
        return False, f"broker disconnected{down}, outbox {what} (depth {depth}); status: {status or '-'}", data

    fps = data.get("fps")
    fps_text = f", {fps:g} fps" if isinstance(fps, (int, float)) else ""
    summary = f"{frames} frames, last {frame_age:.1f} s ago{fps_text}, {broker}, backend {backend}"
    if status:
        summary += f"; {status}"
    problems = degraded(data)
    if problems:
        summary = f"{'; '.join(problems)} ({summary})"
    return True, summary, data


def degraded(data: dict[str, Any] | None) -> list[str]:
    """What the agent reported as degraded (it keeps running and keeps what it accepted; a person should look)."""
    problems = (data or {}).get("problems")
    return [str(p) for p in problems] if isinstance(problems, list) else []


# --------------------------------------------------------------------------- fer-agent health


def add_health_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``fer-agent health`` (agent/cli.py adds the subcommand and calls :func:`health_command`)."""
    parser.add_argument(
        "--config",
        "-c",
        metavar="YAML",
        help=f"agent config whose service: section names the health file (default: {SYSTEM_CONFIG} if readable)",
    )
    parser.add_argument("--health-file", metavar="PATH", help="health file to read; overrides --config")
    parser.add_argument(
        "--max-age",
        type=float,
        metavar="S",
        help="seconds since the last frame before it is unhealthy (default: service.health_max_age_s)",
    )
    parser.add_argument("--json", action="store_true", help="print a JSON object instead of one line")


def _service_config(path: str | os.PathLike[str]) -> ServiceConfig:
    from agent.config import load_config

    return load_config(path).service


def health_command(args: argparse.Namespace) -> int:
    """``fer-agent health``: 0 healthy, 1 unhealthy (reason printed); a bad config is a FerError (exit 2)."""
    cfg = ServiceConfig()
    config_path = getattr(args, "config", None)
    if config_path:
        cfg = _service_config(config_path)
    elif SYSTEM_CONFIG.is_file() and os.access(SYSTEM_CONFIG, os.R_OK):
        cfg = _service_config(SYSTEM_CONFIG)
    path = Path(args.health_file) if getattr(args, "health_file", None) else resolve_health_file(cfg)
    max_age = getattr(args, "max_age", None) or cfg.health_max_age_s
    ok, message, data = _evaluate(path, max_age, None, None)
    # Degraded is still exit 0: the agent runs and keeps what it accepted, and a rollback would not free a disk
    # nor change a broker's limit. Monitoring reads the word (or "degraded" in --json).
    word = "unhealthy" if not ok else "degraded" if degraded(data) else "healthy"
    if getattr(args, "json", False):
        print(json.dumps({"healthy": ok, "degraded": ok and bool(degraded(data)), "message": message,
                          "health_file": str(path), "health": data}, indent=2))
    else:
        print(f"{word}: {message}")
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry (``python -m agent.health``) for boards where the CLI is broken."""
    from agent.contracts.errors import run_command

    parser = argparse.ArgumentParser(prog="fer-agent", description="Is the running agent healthy?")
    parser.set_defaults(func=health_command, command="health")
    add_health_arguments(parser)
    return run_command("fer-agent", parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
