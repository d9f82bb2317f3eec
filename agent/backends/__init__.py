"""Inference backends: one file per runtime, one registry line each.

A backend loads a bundle and turns a batch of preprocessed faces into scores.
Adding one means a new module with a :class:`~agent.backends.base.Backend`
subclass and a line in :data:`REGISTRY`.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

from agent.backends.base import Backend, BackendError
from agent.contracts.manifest import Manifest

log = logging.getLogger(__name__)

# name -> "module:Class"; imported lazily so a board without LiteRT can run SNPE.
REGISTRY: dict[str, str] = {
    "tflite": "agent.backends.tflite:TFLiteBackend",
    "snpe": "agent.backends.snpe:SnpeBackend",
}


def backend_class(name: str) -> type[Backend]:
    if name not in REGISTRY:
        raise BackendError(f"unknown backend {name!r}; choose one of: {', '.join(sorted(REGISTRY))}")
    module, _, cls = REGISTRY[name].partition(":")
    return getattr(importlib.import_module(module), cls)


def select_backend(backend_cfg: Any, manifest: Manifest) -> tuple[str, str]:
    """(backend name, reason) for ``backend.type``; ``auto`` asks the SNPE module first."""
    if backend_cfg.type != "auto":
        return backend_cfg.type, f"backend.type is {backend_cfg.type}"
    from agent.backends.snpe import is_available

    ok, why = is_available(manifest, backend_cfg.snpe)
    if ok:
        return "snpe", f"auto: {why}"
    return "tflite", f"auto: snpe not usable ({why})"


def create_backend(backend_cfg: Any, manifest: Manifest) -> Backend:
    """Build the configured backend (``backend_cfg`` is the config's ``backend:`` section)."""
    name, why = select_backend(backend_cfg, manifest)
    backend = backend_class(name)(manifest, getattr(backend_cfg, name))
    from agent.backends.fallback import maybe_wrap  # snpe: switch to tflite after K consecutive failures

    backend = maybe_wrap(backend, getattr(backend_cfg, name),
                         lambda fb: backend_class(fb)(manifest, getattr(backend_cfg, fb)))
    backend.selection_reason = why  # type: ignore[attr-defined]
    log.info("backend: %s (%s)", backend.describe(), why)
    return backend


__all__ = ["Backend", "BackendError", "REGISTRY", "backend_class", "create_backend", "select_backend"]
