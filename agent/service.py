"""Running as a systemd service: the ``service:`` section and where state and health files live.

The agent and ``fer-agent health`` resolve paths with the same functions, so
a person in a login shell (no ``$RUNTIME_DIRECTORY``) finds the file the
service writes. sd_notify is :mod:`agent.notify`; the health file and its
check are :mod:`agent.health`.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

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
    state_dir: str | None = field(
        default=None,
        metadata={"doc": "outbox, compiled QNN contexts and other state; empty = $STATE_DIRECTORY or "
                         "~/.local/state/fer-agent"},
    )
    health_file: str | None = field(
        default=None,
        metadata={
            "doc": "health snapshot read by `fer-agent health`; empty = $RUNTIME_DIRECTORY/health.json, "
            "/run/fer-agent/health.json when installed, else $XDG_RUNTIME_DIR/fer-agent/health.json"
        },
    )
    health_max_age_s: float = field(
        default=30.0,
        metadata={"doc": "unhealthy when the last processed frame is older than this (seconds)", "min": 0.1},
    )
    health_interval_s: float = field(
        default=2.0,
        metadata={
            "doc": "minimum seconds between health file writes (the frame loop calls it every frame)",
            "min": 0.0,
        },
    )
    broker_grace_s: float = field(
        default=60.0,
        metadata={"doc": "a broker outage shorter than this still counts as healthy (reconnecting)", "min": 0.0},
    )


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
