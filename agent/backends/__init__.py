"""Inference backends: one file per runtime, one registry line each.

A backend loads a bundle and turns a batch of preprocessed faces into scores.
Adding one means a new module with a :class:`~agent.backends.base.Backend`
subclass and a line in :data:`REGISTRY`.
"""

from __future__ import annotations

import importlib

from agent.backends.base import Backend, BackendError

# name -> "module:Class"; imported lazily so a board without LiteRT can run SNPE.
REGISTRY: dict[str, str] = {
    "tflite": "agent.backends.tflite:TFLiteBackend",
}


def backend_class(name: str) -> type[Backend]:
    if name not in REGISTRY:
        raise BackendError(f"unknown backend {name!r}; choose one of: {', '.join(sorted(REGISTRY))}")
    module, _, cls = REGISTRY[name].partition(":")
    return getattr(importlib.import_module(module), cls)


__all__ = ["Backend", "BackendError", "REGISTRY", "backend_class"]
