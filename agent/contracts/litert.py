"""Opening a bundle's TFLite file: the one interpreter loader of the board and the host tools.

Prefers ``ai-edge-litert``; falls back to ``tflite-runtime`` and, only when it
is what is installed, ``tensorflow.lite``. An external delegate library (e.g.
Qualcomm's ``libQnnTFLiteDelegate.so`` with ``backend_type: htp``) can take
the graph off the CPU. Host evaluation and the agent load files the same way,
so an accuracy measured on the host is the board's.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from agent.contracts.errors import InferenceError


def _interpreter_module() -> tuple[Any, str]:
    """(module with Interpreter and load_delegate, runtime name)."""
    for name, label in (
        ("ai_edge_litert.interpreter", "ai-edge-litert"),
        ("tflite_runtime.interpreter", "tflite-runtime"),
    ):
        try:
            return importlib.import_module(name), label
        except ImportError:
            continue
    try:
        # Last resort on a workstation that only has TensorFlow; never a board dependency.
        return importlib.import_module("tensorflow").lite, "tensorflow.lite"
    except ImportError:
        raise InferenceError(
            "no TFLite runtime installed: pip install ai-edge-litert (or use backend.type: snpe or qnn)"
        ) from None


def runtime_name() -> str:
    return _interpreter_module()[1]


def load_interpreter(
    path: str | Path,
    threads: int | None = 1,
    delegate: str | None = None,
    delegate_options: dict[str, str] | None = None,
) -> Any:
    """An allocated interpreter for ``path``; every failure is an :class:`InferenceError` naming the file."""
    module, label = _interpreter_module()
    path = Path(path)
    if not path.exists():
        raise InferenceError(f"{path}: model file not found")
    delegates = []
    if delegate:
        try:
            delegates.append(module.load_delegate(delegate, dict(delegate_options or {})))
        except (ValueError, OSError, RuntimeError) as exc:
            raise InferenceError(
                f"tflite.delegate: cannot load {delegate} with options {delegate_options or {}}: {exc}"
            ) from None
    try:
        interp = module.Interpreter(model_path=str(path), num_threads=threads, experimental_delegates=delegates or None)
        interp.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        raise InferenceError(f"{path}: {label} cannot load the model: {exc}") from None
    return interp
