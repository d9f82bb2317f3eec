"""Switch to a fallback runtime after K consecutive failed frames.

An accelerator path can break at run time (DSP firmware restarted, the SDK
libraries missing after an update, a hung ``snpe-net-run``). One failed frame
is only counted; K failures in a row mean the path is broken, so the agent
switches to the fallback (normally LiteRT on the CPU), says so once at ERROR
level, tells ``on_switch`` (which makes every later payload name the runtime
really in use), and keeps running. It does not switch back: a broken
accelerator is a reason to look at the board, and flapping between runtimes
would hide that.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import field
from pathlib import Path
from typing import Any

import numpy as np

from agent.contracts.errors import FerError
from agent.runtimes.base import RUNTIMES, InferenceError, Runtime

log = logging.getLogger(__name__)


def fallback_choices() -> tuple[str, ...]:
    return ("none", *RUNTIMES.names())


def fallback_field() -> Any:
    """``fallback:`` of a runtime that can fail at run time (an accelerator); its choices come from the registry."""
    return field(default="tflite", metadata={
        "doc": "runtime to switch to after fallback_after consecutive failed frames; none = keep failing frames",
        "choices": fallback_choices})


def fallback_after_field() -> Any:
    return field(default=5, metadata={"doc": "consecutive failed frames before switching to the fallback runtime",
                                      "min": 1})


class FallbackRuntime(Runtime):
    """Wraps ``primary``; builds the fallback lazily with ``make_fallback`` when it is needed.

    What :class:`Runtime` declares (name, file, shapes) comes from the runtime in use; anything else of the
    wrapped runtimes is reached through :attr:`primary`, :attr:`fallback` or :attr:`active`.
    """

    def __init__(self, primary: Runtime, make_fallback: Callable[[], Runtime], after: int,
                 fallback_name: str = "tflite", on_switch: Callable[[str, str], None] | None = None) -> None:
        if after < 1:
            raise ValueError(f"fallback_after must be >= 1, got {after}")
        super().__init__(primary.model, primary.config, primary.state_dir)
        self.primary = primary
        self.make_fallback = make_fallback
        self.after = after
        self.fallback_name = fallback_name
        self.on_switch = on_switch  # (new runtime name, reason)
        self.fallback: Runtime | None = None
        self.consecutive_failures = 0
        self.total_failures = 0
        self.last_error: str | None = None
        self.switch_reason: str | None = None
        self._fallback_broken: str | None = None

    @property
    def name(self) -> str:  # type: ignore[override]
        return self.active.name

    @property
    def path(self) -> Path | None:  # type: ignore[override]
        return self.active.path

    @property
    def input_shape(self) -> tuple[int, ...] | None:  # type: ignore[override]
        return self.active.input_shape

    @property
    def output_shapes(self) -> list[tuple[int, ...]] | None:  # type: ignore[override]
        return self.active.output_shapes

    @property
    def active(self) -> Runtime:
        return self.fallback if self.fallback is not None else self.primary

    @property
    def switched(self) -> bool:
        return self.fallback is not None

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        if self.fallback is not None:
            return self.check(self.fallback.run(batch), len(batch))
        try:
            out = self.check(self.primary.run(batch), len(batch))
        except InferenceError as exc:
            self.consecutive_failures += 1
            self.total_failures += 1
            self.last_error = str(exc)
            log.warning("%s runtime (%s): frame failed (%d/%d consecutive before switching to %s): %s",
                        self.primary.name, self.model.title, self.consecutive_failures, self.after,
                        self.fallback_name, exc)
            if self.consecutive_failures < self.after or self._fallback_broken or not self._switch():
                raise
            return self.check(self.active.run(batch), len(batch))  # the frame is not lost: the fallback answers it
        self.consecutive_failures = 0
        return out

    def _switch(self) -> bool:
        first_line = self.last_error.splitlines()[0] if self.last_error else "unknown error"
        try:
            fallback = self.make_fallback()
        except FerError as exc:
            self._fallback_broken = str(exc)
            log.error("%s runtime failed %d consecutive frames, but the %s fallback cannot start: %s; staying on %s",
                      self.primary.name, self.consecutive_failures, self.fallback_name, exc, self.primary.name)
            return False
        self.switch_reason = (f"{self.primary.name} failed {self.consecutive_failures} consecutive frames "
                              f"(last error: {first_line})")
        log.error("switching the %s from the %s runtime to %s: %s", self.model.title, self.primary.name,
                  fallback.name, self.switch_reason)
        self.fallback = fallback
        try:
            self.primary.close()
        except Exception as exc:  # noqa: BLE001 - closing a broken runtime must not stop the switch
            log.warning("closing the %s runtime failed: %s", self.primary.name, exc)
        if self.on_switch is not None:
            self.on_switch(fallback.name, self.switch_reason)
        return True

    def describe(self) -> str:
        if self.fallback is not None:
            return f"{self.fallback.describe()} [fallback: {self.switch_reason}]"
        return f"{self.primary.describe()} (falls back to {self.fallback_name} after {self.after} consecutive failures)"

    def close(self) -> None:
        self.active.close()


def start_with_fallback(name: str, config: Any, make_runtime: Callable[[str], Runtime], what: str
                        ) -> tuple[Runtime, str | None]:
    """``(make_runtime(name), None)``; when that fails at start (a session the NPU refuses, a missing SDK library)
    and the runtime's config names a fallback, ``(the fallback, why)`` instead, with the reason logged. No fallback:
    the error stands."""
    try:
        return make_runtime(name), None
    except FerError as exc:
        other = getattr(config, "fallback", None)
        if not other or other in ("none", name):
            raise
        log.error("the %s runtime cannot start for the %s: %s; using %s instead", name, what, exc, other)
        return make_runtime(other), f"{name} could not start: {str(exc).splitlines()[0]}"


def maybe_wrap(primary: Runtime, make_runtime: Callable[[str], Runtime],
               on_switch: Callable[[str, str], None] | None = None) -> Runtime:
    """Wrap ``primary`` when its config asks for a fallback (:func:`fallback_field` fields).

    ``make_runtime(name)`` builds the fallback by registry name, only when the switch happens.
    """
    name = getattr(primary.config, "fallback", None)
    if not name or name in ("none", primary.name):
        return primary
    after = int(getattr(primary.config, "fallback_after", 5))
    return FallbackRuntime(primary, lambda: make_runtime(name), after, fallback_name=name, on_switch=on_switch)
