"""Switch to a fallback backend after K consecutive failed frames.

An accelerator path can break at run time (DSP firmware restarted, the SDK
libraries missing after an update, a hung ``snpe-net-run``). One failed frame
is only counted; K failures in a row mean the path is broken, so the agent
switches to the fallback (normally the TFLite backend on the CPU), says so
once at ERROR level and in :meth:`FallbackBackend.describe` (which feeds the
status message), and keeps running. It does not switch back: a broken
accelerator is a reason to look at the board, and flapping between runtimes
would hide that.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np

from agent.backends.base import Backend, BackendError
from agent.contracts.errors import FerError

log = logging.getLogger(__name__)


class FallbackBackend(Backend):
    """Wraps ``primary``; builds the fallback lazily with ``make_fallback`` when it is needed."""

    def __init__(self, primary: Backend, make_fallback: Callable[[], Backend], after: int, fallback_name: str = "tflite",
                 on_switch: Callable[[str], None] | None = None) -> None:
        if after < 1:
            raise ValueError(f"fallback_after must be >= 1, got {after}")
        super().__init__(primary.manifest, primary.config)
        self.primary = primary
        self.make_fallback = make_fallback
        self.after = after
        self.fallback_name = fallback_name
        self.on_switch = on_switch
        self.fallback: Backend | None = None
        self.consecutive_failures = 0
        self.total_failures = 0
        self.last_error: str | None = None
        self.switch_reason: str | None = None
        self._fallback_broken: str | None = None
        self.name = primary.name

    @property
    def active(self) -> Backend:
        return self.fallback if self.fallback is not None else self.primary

    @property
    def switched(self) -> bool:
        return self.fallback is not None

    def infer(self, faces: np.ndarray) -> np.ndarray:
        if self.fallback is not None:
            return self.fallback.infer(faces)
        try:
            out = self.primary.infer(faces)
        except BackendError as exc:
            self.consecutive_failures += 1
            self.total_failures += 1
            self.last_error = str(exc)
            log.warning("%s backend: frame failed (%d/%d consecutive before switching to %s): %s",
                        self.primary.name, self.consecutive_failures, self.after, self.fallback_name, exc)
            if self.consecutive_failures < self.after or self._fallback_broken:
                raise
            if not self._switch():
                raise
            # The frame is not lost: the fallback answers it.
            return self.fallback.infer(faces)  # type: ignore[union-attr]
        self.consecutive_failures = 0
        return out

    def _switch(self) -> bool:
        first_line = (self.last_error or "").splitlines()[0] if self.last_error else "unknown error"
        try:
            fallback = self.make_fallback()
        except FerError as exc:
            self._fallback_broken = str(exc)
            log.error("%s backend failed %d consecutive frames, but the %s fallback cannot start: %s; staying on %s",
                      self.primary.name, self.consecutive_failures, self.fallback_name, exc, self.primary.name)
            return False
        self.switch_reason = (f"{self.primary.name} failed {self.consecutive_failures} consecutive frames "
                              f"(last error: {first_line})")
        log.error("switching inference backend from %s to %s: %s", self.primary.name, self.fallback_name, self.switch_reason)
        self.fallback = fallback
        self.name = fallback.name
        try:
            self.primary.close()
        except Exception as exc:  # noqa: BLE001 - closing a broken runtime must not stop the switch
            log.warning("closing the %s backend failed: %s", self.primary.name, exc)
        if self.on_switch is not None:
            self.on_switch(self.switch_reason)
        return True

    def describe(self) -> str:
        if self.fallback is not None:
            return f"{self.fallback.describe()} [fallback: {self.switch_reason}]"
        return f"{self.primary.describe()} (falls back to {self.fallback_name} after {self.after} consecutive failures)"

    def status(self) -> dict[str, Any]:
        """Fields for the status message."""
        return {"backend": self.active.name, "primary": self.primary.name, "switched": self.switched,
                "switch_reason": self.switch_reason, "consecutive_failures": self.consecutive_failures,
                "failures": self.total_failures, "last_error": self.last_error}

    def close(self) -> None:
        if self.fallback is not None:
            self.fallback.close()
        else:
            self.primary.close()


def maybe_wrap(primary: Backend, config: Any, make_backend: Callable[[str], Backend],
               on_switch: Callable[[str], None] | None = None) -> Backend:
    """Wrap ``primary`` when its config asks for a fallback (``fallback``/``fallback_after`` fields).

    ``make_backend(name)`` builds the fallback backend by registry name; it is
    called only when the switch happens.
    """
    name = getattr(config, "fallback", None)
    if not name or name in ("none", primary.name):
        return primary
    after = int(getattr(config, "fallback_after", 5))
    return FallbackBackend(primary, lambda: make_backend(name), after, fallback_name=name, on_switch=on_switch)
