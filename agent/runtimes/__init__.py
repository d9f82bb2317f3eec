"""Inference runtimes: one module each, discovered by :data:`~agent.runtimes.base.RUNTIMES`.

A new runtime is one file in this package that subclasses
:class:`~agent.runtimes.base.Runtime` with ``name``, ``config_class`` and
``auto_priority``; the ``backend:`` config section (its ``type`` choices and a
sub-section per runtime), the fallback choices, ``print-config`` and the CLI
help all come from the registry.

"Backend" is the user's word for the runtime the classifier runs on (the
``backend:`` section, ``--backend``, the ``backend`` field of the payloads);
in the code it is a :class:`Runtime`. Other things are not called runtime:
SNPE's cpu/gpu/dsp choice is its *target* (``backend.snpe.target``) and
LiteRT's Python package the *interpreter package*.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.runtimes.base import RUNTIMES, BundleModel, InferenceError, Runtime
from agent.runtimes.fallback import maybe_wrap, start_with_fallback

log = logging.getLogger(__name__)


def backend_choices() -> tuple[str, ...]:
    return ("auto", *RUNTIMES.names())


def backend_help() -> str:
    ranked = sorted((c for c in RUNTIMES.all().values() if c.auto_priority is not None),
                    key=lambda c: -(c.auto_priority or 0))
    order = ", then ".join(c.name for c in ranked)
    return f"auto = the first usable of {order}; " + "; ".join(
        f"{c.name} = {c.summary}" for c in RUNTIMES.all().values() if c.summary)


@dataclass
class BackendConfig:
    """``backend:``: which runtime runs the models, and one sub-section of options per runtime."""

    type: str = field(default="auto", metadata={"doc": backend_help, "choices": backend_choices})

    def __post_init__(self) -> None:
        RUNTIMES.fill_sections(self)

    @classmethod
    def config_sections(cls) -> dict[str, tuple[type, str]]:
        return RUNTIMES.config_sections("backend.type")

    def section(self, name: str) -> Any:
        return getattr(self, name)

    def __eq__(self, other: object) -> bool:  # the sub-sections are attributes, not dataclass fields
        return isinstance(other, BackendConfig) and vars(self) == vars(other)


def select_runtime(backend: BackendConfig, model: BundleModel) -> tuple[str, str]:
    """(runtime name, reason) for ``backend.type``; ``auto`` tries runtimes by priority and says why."""
    if backend.type != "auto":
        return backend.type, f"backend.type is {backend.type}"
    skipped = []
    ranked = sorted((c for c in RUNTIMES.all().values() if c.auto_priority is not None),
                    key=lambda c: -(c.auto_priority or 0))
    for cls in ranked:
        why_not = cls.unavailable(model, backend.section(cls.name))
        if why_not is None:
            tail = f" ({'; '.join(skipped)})" if skipped else ""
            return cls.name, f"auto: {cls.name} is the first usable runtime{tail}"
        skipped.append(f"{cls.name} not usable: {why_not}")
    raise InferenceError(f"backend.type auto: no runtime can run the {model.title}: {'; '.join(skipped)}")


def runtime_for(backend: BackendConfig, model: BundleModel, preferred: str = "auto") -> tuple[str, str]:
    """(runtime name, reason) for a second model (the detector): ``preferred``, else the backend's runtime
    when it can run this model, else tflite."""
    if preferred != "auto":
        return preferred, f"configured {preferred}"
    if backend.type == "auto":
        return select_runtime(backend, model)
    why_not = RUNTIMES.get(backend.type).unavailable(model, backend.section(backend.type))
    if why_not is None:
        return backend.type, f"follows backend.type {backend.type}"
    return "tflite", f"backend.type {backend.type} cannot run it: {why_not}"


@dataclass(frozen=True)
class StartedRuntime:
    """What :func:`create_runtime` started, and why that one (for logs and the status payload)."""

    runtime: Runtime
    #: Why this runtime: the config, or ``auto``'s choice and what it skipped.
    reason: str
    #: Set when the chosen runtime could not start and its fallback runs instead: what went wrong.
    start_failure: str | None = None

    @property
    def explanation(self) -> str:
        return f"{self.reason}; fallback: {self.start_failure}" if self.start_failure else self.reason


def create_runtime(backend: BackendConfig, model: BundleModel, name: str | None = None, reason: str = "",
                   on_switch: Callable[[str, str], None] | None = None,
                   state_dir: Path | None = None) -> StartedRuntime:
    """The runtime for ``model`` (``name``, else per ``backend.type``), wrapped in its fallback if configured.

    ``state_dir``: the resolved ``service.state_dir``, where a runtime may cache files (QNN contexts).
    """
    if name is None:
        name, reason = select_runtime(backend, model)

    def make(runtime_name: str) -> Runtime:
        return RUNTIMES.get(runtime_name)(model, backend.section(runtime_name), state_dir=state_dir)

    first, failure = start_with_fallback(name, backend.section(name), make, model.title)
    runtime = maybe_wrap(first, make, on_switch)
    log.info("%s runtime: %s (%s)", model.title, runtime.describe(), reason or "configured")
    return StartedRuntime(runtime, reason, failure)


__all__ = ["RUNTIMES", "BackendConfig", "BundleModel", "InferenceError", "Runtime", "StartedRuntime", "backend_choices",
           "create_runtime", "runtime_for", "select_runtime"]
