"""LiteRT (TensorFlow Lite) runtime: in-process, on the CPU (XNNPACK) or an external delegate.

Emulation on a laptop and the fallback on a board. Input and output buffers
are reused, so a frame allocates only its result arrays; a model with
int8/uint8 input or output is (de)quantised here so callers always deal in
float32.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

import numpy as np

from agent.contracts.litert import load_interpreter, runtime_name
from agent.runtimes.base import BundleModel, InferenceError, Runtime

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


class TFLiteRuntime(Runtime):
    name = "tflite"
    config_class = TFLiteConfig
    summary = "LiteRT on the CPU or a delegate (emulation, fallback)"
    auto_priority = 0

    @classmethod
    def unavailable(cls, model: BundleModel, config: TFLiteConfig) -> str | None:
        if not any(model.has(k) for k in ("tflite_int8", "tflite")):
            return f"bundle has no TFLite file for the {model.title}"
        try:
            runtime_name()
        except InferenceError as exc:
            return str(exc)
        return None

    def __init__(self, model: BundleModel, config: TFLiteConfig | None = None, state_dir: Path | None = None) -> None:
        super().__init__(model, config, state_dir)
        cfg: TFLiteConfig = self.config
        kinds = ["tflite_int8", "tflite"] if cfg.model == "int8" else ["tflite", "tflite_int8"]
        present = [k for k in kinds if model.has(k)]
        if not present:
            raise InferenceError(f"bundle {model.manifest.root}: has neither a tflite nor a tflite_int8 file "
                                 f"for the {model.title}")
        if present[0] != kinds[0] and model.key == "classifier":
            log.warning("bundle has no %s file; using %s instead", kinds[0], present[0])
        self.role = model.role(present[0])
        self.path = model.manifest.path_of(self.role)
        self.interpreter_package = runtime_name()  # which package provides the interpreter (ai-edge-litert...)
        self.interpreter = load_interpreter(self.path, cfg.threads, cfg.delegate, cfg.delegate_options)
        inp = self.interpreter.get_input_details()[0]
        self.input_shape = tuple(int(d) for d in inp["shape"])
        self._in_index = inp["index"]
        self._in_dtype = np.dtype(inp["dtype"])
        self._in_q = inp.get("quantization", (0.0, 0))
        self._in_buf = np.zeros(self.input_shape, dtype=self._in_dtype)
        outs = self.interpreter.get_output_details()
        self.output_shapes = [tuple(int(d) for d in o["shape"]) for o in outs]
        self._outs = [(o["index"], np.dtype(o["dtype"]) != np.float32, o.get("quantization", (0.0, 0))) for o in outs]

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        n = batch.shape[0]
        results = [np.empty((n, *shape[1:]), dtype=np.float32) for shape in self.output_shapes]
        interp = self.interpreter
        try:
            for i in range(n):
                if self._in_dtype == np.float32:
                    self._in_buf[0] = batch[i]
                else:
                    scale, zero = self._in_q
                    info = np.iinfo(self._in_dtype)
                    self._in_buf[0] = np.clip(np.round(batch[i] / scale + zero), info.min, info.max)
                interp.set_tensor(self._in_index, self._in_buf)
                interp.invoke()
                for (index, quantized, (scale, zero)), result in zip(self._outs, results, strict=True):
                    out = interp.get_tensor(index)[0]
                    result[i] = (out.astype(np.float32) - zero) * scale if quantized else out
        except (ValueError, RuntimeError) as exc:
            raise InferenceError(f"{self.path.name}: inference failed: {exc}") from None
        return results

    def describe(self) -> str:
        cfg: TFLiteConfig = self.config
        where = f"delegate {Path(cfg.delegate).name} {cfg.delegate_options or ''}".strip() if cfg.delegate else "CPU"
        threads = f"{cfg.threads} thread{'s' if cfg.threads != 1 else ''}"
        return f"tflite ({self.interpreter_package}, {self.path.name}, {threads}, {where})"
