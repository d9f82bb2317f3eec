"""LiteRT (TensorFlow Lite) backend: in-process, arrays in, scores out.

Prefers ``ai-edge-litert``; falls back to ``tflite-runtime`` and, only when it
is what is installed, ``tensorflow.lite``. An external delegate library (e.g.
Qualcomm's ``libQnnTFLiteDelegate.so`` with ``backend_type: htp``) can take
the graph off the CPU. :func:`load_interpreter` is shared with the BlazeFace
detector so both models run through the same runtime and settings.
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

import numpy as np

from agent.backends.base import Backend, BackendError
from agent.contracts.manifest import Manifest

log = logging.getLogger(__name__)


@dataclass
class TFLiteConfig:
    model: Literal["int8", "float"] = field(
        default="int8",
        metadata={"doc": "which bundle file to run: int8 (model_int8.tflite, faster) or float (model.tflite)"},
    )
    threads: int = field(default=1, metadata={"doc": "CPU threads for the interpreter", "min": 1, "max": 64})
    delegate: Optional[str] = field(
        default=None,
        metadata={"doc": "external delegate library, e.g. /usr/lib/libQnnTFLiteDelegate.so; empty = CPU (XNNPACK)"},
    )
    delegate_options: dict[str, str] = field(
        default_factory=dict,
        metadata={"doc": "options passed to the delegate, e.g. {backend_type: htp} or {backend_type: gpu}"},
    )


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
        raise BackendError(
            "no TFLite runtime installed: pip install ai-edge-litert (or use backend.type: snpe)"
        ) from None


def runtime_name() -> str:
    return _interpreter_module()[1]


def load_interpreter(
    path: str | Path, threads: int = 1, delegate: str | None = None, delegate_options: dict[str, str] | None = None
) -> Any:
    """An allocated interpreter for ``path``; every failure is a :class:`BackendError` naming the file."""
    module, label = _interpreter_module()
    path = Path(path)
    if not path.exists():
        raise BackendError(f"{path}: model file not found")
    delegates = []
    if delegate:
        try:
            delegates.append(module.load_delegate(delegate, dict(delegate_options or {})))
        except (ValueError, OSError, RuntimeError) as exc:
            raise BackendError(
                f"tflite.delegate: cannot load {delegate} with options {delegate_options or {}}: {exc}"
            ) from None
    try:
        interp = module.Interpreter(model_path=str(path), num_threads=threads, experimental_delegates=delegates or None)
        interp.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        raise BackendError(f"{path}: {label} cannot load the model: {exc}") from None
    return interp


class TFLiteBackend(Backend):
    """Runs the bundle's classifier one face per invoke (the model's batch is 1).

    Input and output buffers are reused, so a frame allocates only the result
    array. A model with int8/uint8 input or output is (de)quantised here so the
    caller always deals in float32.
    """

    name = "tflite"

    def __init__(self, manifest: Manifest, config: TFLiteConfig | None = None) -> None:
        super().__init__(manifest, config or TFLiteConfig())
        cfg: TFLiteConfig = self.config
        role = "tflite_int8" if cfg.model == "int8" else "tflite"
        if not manifest.has(role):
            other = "tflite" if role == "tflite_int8" else "tflite_int8"
            if not manifest.has(other):
                raise BackendError(f"bundle {manifest.root}: has neither a tflite nor a tflite_int8 file")
            log.warning("bundle has no %s file; using %s instead", role, other)
            role = other
        self.role = role
        self.path = manifest.path_of(role)
        self.runtime = runtime_name()
        self.interpreter = load_interpreter(self.path, cfg.threads, cfg.delegate, cfg.delegate_options)
        inp = self.interpreter.get_input_details()[0]
        out = self.interpreter.get_output_details()[0]
        want = tuple(manifest.input.shape[1:])
        if tuple(int(d) for d in inp["shape"][1:]) != want:
            raise BackendError(
                f"{self.path}: input shape {[int(d) for d in inp['shape']]} does not match "
                f"the manifest's {list(manifest.input.shape)}"
            )
        n_labels = len(manifest.labels)
        if int(out["shape"][-1]) != n_labels:
            raise BackendError(
                f"{self.path}: output has {out['shape'][-1]} scores, the manifest lists {n_labels} labels"
            )
        self._in_index = inp["index"]
        self._out_index = out["index"]
        self._in_dtype = np.dtype(inp["dtype"])
        self._in_q = inp.get("quantization", (0.0, 0))
        self._out_q = out.get("quantization", (0.0, 0))
        self._out_quantized = np.dtype(out["dtype"]) != np.float32
        self._in_buf = np.zeros((1, *want), dtype=self._in_dtype)

    def infer(self, faces: np.ndarray) -> np.ndarray:
        n = faces.shape[0]
        result = np.empty((n, len(self.manifest.labels)), dtype=np.float32)
        interp = self.interpreter
        try:
            for i in range(n):
                if self._in_dtype == np.float32:
                    self._in_buf[0] = faces[i]
                else:
                    scale, zero = self._in_q
                    info = np.iinfo(self._in_dtype)
                    self._in_buf[0] = np.clip(np.round(faces[i] / scale + zero), info.min, info.max)
                interp.set_tensor(self._in_index, self._in_buf)
                interp.invoke()
                out = interp.get_tensor(self._out_index).reshape(-1)
                if self._out_quantized:
                    scale, zero = self._out_q
                    result[i] = (out.astype(np.float32) - zero) * scale
                else:
                    result[i] = out
        except (ValueError, RuntimeError) as exc:
            raise BackendError(f"{self.path.name}: inference failed: {exc}") from None
        return result

    def describe(self) -> str:
        cfg: TFLiteConfig = self.config
        where = f"delegate {Path(cfg.delegate).name} {cfg.delegate_options or ''}".strip() if cfg.delegate else "CPU"
        return (
            f"tflite ({self.runtime}, {self.path.name}, {cfg.threads} thread{'s' if cfg.threads != 1 else ''}, {where})"
        )
