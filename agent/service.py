"""systemd integration and health reporting.

Three small pieces that let the agent run unattended under systemd and let
deploy scripts and people ask "is it working?":

* :class:`Notifier` speaks the sd_notify datagram protocol on
  ``$NOTIFY_SOCKET`` directly (a few lines of socket code instead of a
  dependency on libsystemd or a Python binding), so ``Type=notify`` and
  ``WatchdogSec=`` work; it is a no-op outside systemd.
* :class:`HealthReporter` keeps a small JSON snapshot (last frame, broker,
  outbox) in the runtime directory, written atomically and rate-limited so the
  frame loop can call it every frame.
* :func:`check_health` / :func:`health_command` read that snapshot for
  ``fer-agent health`` (exit 0 healthy, 1 unhealthy with the reason).

The health file path is resolved by :func:`resolve_health_file` in both the
agent and ``fer-agent health`` so that a person in a login shell (no
``$RUNTIME_DIRECTORY``) finds the file the service writes.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from agent.contracts.errors import ConfigError, FerError
from agent.contracts.rawtensor import default_work_dir

log = logging.getLogger(__name__)

#: Name of the unit, of ``StateDirectory=``/``RuntimeDirectory=`` and of the system user.
SERVICE_NAME = "fer-agent"
#: Where the installed unit's ``RuntimeDirectory=fer-agent`` lives.
SYSTEM_RUNTIME_DIR = Path("/run") / SERVICE_NAME
#: Config file of an installed agent; ``fer-agent health`` reads it when no ``--config`` is given.
SYSTEM_CONFIG = Path("/etc") / SERVICE_NAME / "agent.yaml"
HEALTH_FILE_NAME = "health.json"
HEALTH_FORMAT_VERSION = 1


@dataclass
class ServiceConfig:
    state_dir: str | None = field(default=None, metadata={"doc": "outbox and other state; empty = $STATE_DIRECTORY or ~/.local/state/fer-agent"})
    work_dir: str | None = field(default=None, metadata={"doc": "tmpfs for raw tensors; empty = $RUNTIME_DIRECTORY, $XDG_RUNTIME_DIR or /dev/shm"})
    health_file: str | None = field(
        default=None,
        metadata={"doc": "health snapshot read by `fer-agent health`; empty = $RUNTIME_DIRECTORY/health.json, "
                         "/run/fer-agent/health.json when installed, else $XDG_RUNTIME_DIR/fer-agent/health.json"},
    )
    health_max_age_s: float = field(default=30.0, metadata={"doc": "unhealthy when the last processed frame is older than this (seconds)", "min": 0.1})
    health_interval_s: float = field(default=2.0, metadata={"doc": "minimum seconds between health file writes (the frame loop calls it every frame)", "min": 0.0})
    broker_grace_s: float = field(default=60.0, metadata={"doc": "a broker outage shorter than this still counts as healthy (reconnecting)", "min": 0.0})

    def __post_init__(self) -> None:
        # agent.config checks types and "min" already; this also guards direct construction
        # (the fallback loader below, tests). ValueError naming the key is the section convention.
        for name in ("health_max_age_s", "health_interval_s", "broker_grace_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"{name}: expected a number >= 0, got {value!r}")
        if self.health_max_age_s <= 0:
            raise ValueError(f"health_max_age_s: must be > 0, got {self.health_max_age_s!r}")


# --------------------------------------------------------------------------- paths

def _first_dir(value: str | None) -> str | None:
    """systemd joins several ``RuntimeDirectory=`` entries with ':'; the first is ours."""
    if not value:
        return None
    first = value.split(":")[0].strip()
    return first or None


def _installed(system_runtime_dir: Path, system_config: Path) -> bool:
    return system_runtime_dir.is_dir() or system_config.parent.is_dir()


def resolve_health_file(
    cfg: ServiceConfig | None = None,
    env: Mapping[str, str] | None = None,
    *,
    system_runtime_dir: Path = SYSTEM_RUNTIME_DIR,
    system_config: Path = SYSTEM_CONFIG,
) -> Path:
    """Where the health snapshot lives; the agent and ``fer-agent health`` both call this.

    Order: ``service.health_file``; ``$RUNTIME_DIRECTORY/health.json`` (inside the
    unit); ``/run/fer-agent/health.json`` when the agent is installed on this
    machine (a person's shell has no ``$RUNTIME_DIRECTORY`` but must find the
    service's file); otherwise a per-user runtime path for a development run.
    """
    env = os.environ if env is None else env
    if cfg is not None and cfg.health_file:
        return Path(cfg.health_file).expanduser()
    runtime = _first_dir(env.get("RUNTIME_DIRECTORY"))
    if runtime:
        return Path(runtime) / HEALTH_FILE_NAME
    if _installed(system_runtime_dir, system_config):
        return system_runtime_dir / HEALTH_FILE_NAME
    xdg = env.get("XDG_RUNTIME_DIR")
    if xdg:
        return Path(xdg) / SERVICE_NAME / HEALTH_FILE_NAME
    return Path(tempfile.gettempdir()) / f"{SERVICE_NAME}-{os.getuid()}" / HEALTH_FILE_NAME


def resolve_state_dir(cfg: ServiceConfig | None = None, env: Mapping[str, str] | None = None) -> Path:
    """Persistent state (the MQTT outbox): ``service.state_dir``, ``$STATE_DIRECTORY``, ~/.local/state/fer-agent."""
    env = os.environ if env is None else env
    if cfg is not None and cfg.state_dir:
        return Path(cfg.state_dir).expanduser()
    state = _first_dir(env.get("STATE_DIRECTORY"))
    if state:
        return Path(state)
    base = env.get("XDG_STATE_HOME") or str(Path(env.get("HOME") or Path.home()) / ".local" / "state")
    return Path(base) / SERVICE_NAME


def resolve_work_dir(cfg: ServiceConfig | None = None) -> Path:
    """tmpfs scratch for raw tensors: ``service.work_dir``, else :func:`agent.contracts.rawtensor.default_work_dir`."""
    if cfg is not None and cfg.work_dir:
        return Path(cfg.work_dir).expanduser()
    return default_work_dir()


# --------------------------------------------------------------------------- sd_notify

class Notifier:
    """sd_notify(3) over ``$NOTIFY_SOCKET`` without libsystemd.

    The protocol is one AF_UNIX datagram of newline-separated ``KEY=value``
    lines per call. A name starting with '@' is an abstract-namespace socket
    (leading NUL byte). Without ``$NOTIFY_SOCKET`` (not under systemd, or
    ``Type=simple``) every method does nothing, so the agent calls them
    unconditionally. Send errors are logged once and swallowed: losing the
    notify socket must never take the frame loop down (the watchdog will).
    """

    def __init__(self, env: Mapping[str, str] | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        env = os.environ if env is None else env
        self._clock = clock
        self._sock: socket.socket | None = None
        self._address: str | None = None
        self._warned = False
        address = env.get("NOTIFY_SOCKET") or ""
        if address.startswith("@"):
            self._address = "\0" + address[1:]
        elif address.startswith("/"):
            self._address = address
        elif address:
            log.warning("NOTIFY_SOCKET=%r is not a unix socket path; sd_notify disabled", address)
        if self._address is not None:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self.watchdog_interval_s: float | None = self._watchdog_interval(env)
        self._last_watchdog = -math.inf

    @staticmethod
    def _watchdog_interval(env: Mapping[str, str]) -> float | None:
        """Half of ``$WATCHDOG_USEC`` (what sd_watchdog_enabled(3) recommends), or None when off."""
        usec = env.get("WATCHDOG_USEC")
        if not usec:
            return None
        pid = env.get("WATCHDOG_PID")
        if pid and pid.strip() != str(os.getpid()):
            return None  # the watchdog is meant for another process (e.g. our parent)
        try:
            value = int(usec)
        except ValueError:
            log.warning("WATCHDOG_USEC=%r is not an integer; watchdog disabled", usec)
            return None
        if value <= 0:
            return None
        return value / 2_000_000.0

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def notify(self, message: str) -> bool:
        """Send one raw sd_notify message; True if it was sent."""
        if self._sock is None or self._address is None:
            return False
        try:
            self._sock.sendto(message.encode("utf-8", "replace"), self._address)
            return True
        except OSError as exc:
            if not self._warned:
                log.warning("sd_notify to %r failed: %s", self._address.replace("\0", "@"), exc)
                self._warned = True
            return False

    @staticmethod
    def _line(text: str) -> str:
        # STATUS= is one line; a newline would start a new (bogus) assignment.
        return " ".join(str(text).split())

    def ready(self, status: str = "") -> bool:
        """After the model is loaded and the source opened: ends ``Type=notify`` start-up."""
        msg = "READY=1"
        if status:
            msg += "\nSTATUS=" + self._line(status)
        sent = self.notify(msg)
        self._last_watchdog = self._clock()  # READY counts as the first sign of life
        return sent

    def status(self, text: str) -> bool:
        """One-line summary shown by ``systemctl status fer-agent``."""
        return self.notify("STATUS=" + self._line(text))

    def watchdog(self) -> bool:
        """Keep-alive from the frame loop; cheap to call every frame (rate-limited to half the timeout)."""
        if self.watchdog_interval_s is None or self._sock is None:
            return False
        now = self._clock()
        if now - self._last_watchdog < self.watchdog_interval_s:
            return False
        self._last_watchdog = now
        return self.notify("WATCHDOG=1")

    def extend_timeout(self, seconds: float) -> bool:
        """Ask for more start/stop time (slow DSP model load) instead of a long ``TimeoutStartSec=``."""
        return self.notify(f"EXTEND_TIMEOUT_USEC={int(seconds * 1_000_000)}")

    def stopping(self, status: str = "") -> bool:
        """On shutdown, before releasing the camera and flushing the outbox."""
        msg = "STOPPING=1"
        if status:
            msg += "\nSTATUS=" + self._line(status)
        return self.notify(msg)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


# --------------------------------------------------------------------------- health file

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
    ) -> bool:
        """Record the latest numbers; returns True when the file was written this call."""
        now = self._clock()
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

    def _write(self, now: float, last_frame_time: float, frames: int, connected: bool,
               depth: int, backend: str, status: str) -> bool:
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


def _evaluate(path: Path, max_age_s: float, broker_grace_s: float | None,
              now: float | None) -> tuple[bool, str, dict[str, Any] | None]:
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
    if broker_grace_s is None:
        broker_grace_s = float(data.get("broker_grace_s") or 60.0)

    last_frame = data.get("last_frame_time")
    frame_age = _age(now, float(last_frame) if last_frame else None)
    written_age = _age(now, written) or 0.0
    backend = data.get("backend") or "?"
    status = data.get("status") or ""

    if frame_age is None:
        started_age = _age(now, data.get("started")) or written_age
        return False, f"no frame processed yet ({frames} frames, agent started {started_age:.0f} s ago, status: {status or '-'})", data
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
    elif trend == "draining" or (last_drain_age is not None and last_drain_age <= broker_grace_s and trend != "growing"):
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
    return True, summary, data


# --------------------------------------------------------------------------- fer-agent health

def add_health_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``fer-agent health`` (agent/cli.py adds the subcommand and calls :func:`health_command`)."""
    parser.add_argument("--config", metavar="YAML",
                        help=f"agent config whose service: section names the health file (default: {SYSTEM_CONFIG} if readable)")
    parser.add_argument("--health-file", metavar="PATH", help="health file to read; overrides --config")
    parser.add_argument("--max-age", type=float, metavar="S",
                        help="seconds since the last frame before it is unhealthy (default: service.health_max_age_s)")
    parser.add_argument("--json", action="store_true", help="print a JSON object instead of one line")


def load_service_config(path: str | os.PathLike[str]) -> ServiceConfig:
    """The ``service:`` section of an agent YAML, via :mod:`agent.config` when it exists.

    Falls back to reading just that section, so ``fer-agent health`` works even
    where the full config loader is unavailable.
    """
    path = Path(path)
    try:
        from agent import config as agent_config
        loader = getattr(agent_config, "load_config", None)
    except ImportError:
        loader = None
    if loader is not None:
        cfg = loader(path)
        service = getattr(cfg, "service", None)
        if isinstance(service, ServiceConfig):
            return service
    import yaml

    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    section = doc.get("service") or {}
    if not isinstance(section, dict):
        raise ConfigError(f"{path}: service: expected a mapping")
    known = {f.name for f in fields(ServiceConfig)}
    unknown = sorted(set(section) - known)
    if unknown:
        raise ConfigError(f"{path}: service.{unknown[0]}: unknown key (known: {', '.join(sorted(known))})")
    try:
        return ServiceConfig(**section)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{path}: service.{exc}") from None


def health_command(args: argparse.Namespace) -> int:
    """``fer-agent health``: 0 healthy, 1 unhealthy (reason printed), 2 bad config."""
    cfg = ServiceConfig()
    config_path = getattr(args, "config", None)
    try:
        if config_path:
            cfg = load_service_config(config_path)
        elif SYSTEM_CONFIG.is_file() and os.access(SYSTEM_CONFIG, os.R_OK):
            cfg = load_service_config(SYSTEM_CONFIG)
    except FerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    path = Path(args.health_file) if getattr(args, "health_file", None) else resolve_health_file(cfg)
    max_age = getattr(args, "max_age", None) or cfg.health_max_age_s
    ok, message, data = _evaluate(path, max_age, None, None)
    if getattr(args, "json", False):
        print(json.dumps({"healthy": ok, "message": message, "health_file": str(path), "health": data}, indent=2))
    else:
        print(f"{'healthy' if ok else 'unhealthy'}: {message}")
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry (``python -m agent.service``) for boards where the CLI is broken."""
    parser = argparse.ArgumentParser(prog="fer-agent health", description="Is the running agent healthy?")
    add_health_arguments(parser)
    return health_command(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
