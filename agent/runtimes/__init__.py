"""Inference runtimes: one module each, discovered by :data:`~agent.runtimes.base.RUNTIMES`.

A new runtime is one file in this package that subclasses
:class:`~agent.runtimes.base.Runtime` with ``name``, ``config_class`` and
``auto_priority``; the ``backend:`` config section (its ``type`` choices and a
sub-section per runtime), the fallback choices, ``print-config`` and the CLI
help all come from the registry.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
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
        for name, cls in RUNTIMES.all().items():
            if name not in self.__dict__:
                setattr(self, name, cls.config_class())

    @classmethod
    def config_sections(cls) -> dict[str, tuple[type, str]]:
        return {name: (c.config_class, f"backend.type: {name} ({c.summary})" if c.summary else name)
                for name, c in RUNTIMES.all().items() if c.config_class.__dataclass_fields__}

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


def create_runtime(backend: BackendConfig, model: BundleModel, name: str | None = None, reason: str = "",
                   on_switch: Callable[[str, str], None] | None = None) -> Runtime:
    """The runtime for ``model`` (``name``, else per ``backend.type``), wrapped in its fallback if configured."""
    if name is None:
        name, reason = select_runtime(backend, model)

    def make(runtime_name: str) -> Runtime:
        return RUNTIMES.get(runtime_name)(model, backend.section(runtime_name))

    first = start_with_fallback(name, backend.section(name), make, model.title)
    runtime = maybe_wrap(first, make, on_switch)
    failure = getattr(first, "start_failure", None)
    runtime.selection_reason = f"{reason}; fallback: {failure}" if failure else reason  # type: ignore[attr-defined]
    log.info("%s runtime: %s (%s)", model.title, runtime.describe(), reason or "configured")
    return runtime


__all__ = ["RUNTIMES", "BackendConfig", "BundleModel", "InferenceError", "Runtime", "backend_choices",
           "create_runtime", "runtime_for", "select_runtime"]
