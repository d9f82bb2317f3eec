"""systemd integration and health reporting. Work in progress: config only so far."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class ServiceConfig:
    state_dir: str | None = field(default=None, metadata={"doc": "outbox and other state; empty = $STATE_DIRECTORY or ~/.local/state/fer-agent"})
    work_dir: str | None = field(default=None, metadata={"doc": "tmpfs for raw tensors; empty = $RUNTIME_DIRECTORY, $XDG_RUNTIME_DIR or /dev/shm"})
