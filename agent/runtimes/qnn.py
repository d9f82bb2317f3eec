"""QNN runtime: Qualcomm's HTP (the NPU) through ONNX Runtime, in-process, one session per model.

The session is created once at start and kept, so a frame costs one
``session.run`` instead of a process, a DLC load and a DSP session. It loads
the bundle's context binary for this board's SoC (``backend.qnn.soc``, else
``/sys/devices/soc0/soc_id``); without one it compiles the QDQ model at start
and caches the context in ``cache_dir`` under its sha256. On x86_64,
``onnxruntime-qnn``'s libQnnHtp.so *simulates* the HTP (~0.3 s per face): real
NPU numerics, never NPU times, so ``backend.type: auto`` does not pick it there.
See docs/qnn.md.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

import numpy as np

from agent.contracts import qnn
from agent.contracts.errors import FerError
from agent.contracts.manifest import sha256_of
from agent.runtimes.base import BundleModel, InferenceError, Runtime
from agent.runtimes.fallback import fallback_after_field, fallback_field

log = logging.getLogger(__name__)

PerfMode = Literal[
    "burst",
    "sustained_high_performance",
    "high_performance",
    "balanced",
    "default",
    "power_saver",
    "low_power_saver",
    "high_power_saver",
    "low_balanced",
    "extreme_power_saver",
]


@dataclass
class QnnConfig:
    soc: Optional[str] = field(
        default=None,
        metadata={
            "doc": "SoC whose context binary to load (qcs6490, qcs8550, sm8650...; docs/qnn.md); empty = "
            "/sys/devices/soc0/soc_id",
            "choices": lambda: ("", *qnn.SOCS),
        },
    )
    htp_performance_mode: PerfMode = field(default="burst", metadata={"doc": "HTP clock and voltage policy"})
    cpu_fallback: bool = field(
        default=False,
        metadata={
            "doc": "let ONNX Runtime run ops the HTP rejects on the CPU (off: such a model is an error naming the op)"
        },
    )
    profiling: Literal["off", "basic", "detailed"] = field(
        default="off", metadata={"doc": "QNN profiling level (costs time on every frame)"}
    )
    cache_dir: Optional[str] = field(
        default=None,
        metadata={
            "doc": "where contexts compiled at start are kept; "
            "empty = <service.state_dir>/qnn"
        },
    )
    fallback: str = fallback_field()
    fallback_after: int = fallback_after_field()


def _target(cfg: QnnConfig) -> qnn.Soc | None:
    return qnn.soc(cfg.soc) if cfg.soc else qnn.detect_soc()


class QnnRuntime(Runtime):
    name = "qnn"
    config_class = QnnConfig
    summary = "QNN HTP (NPU) through ONNX Runtime, in-process (ONNX QDQ or context files); simulated on x86_64"
    auto_priority = 30

    @classmethod
    def unavailable(cls, model: BundleModel, config: QnnConfig) -> str | None:
        if not qnn.qnn_available():
            return f"onnxruntime-qnn is not installed ({qnn.INSTALL_HINT})"
        if qnn.htp_is_simulated():
            return "x86_64 only simulates the HTP (~0.3 s per face); set backend.type: qnn to use the simulator"
        try:
            target = _target(config)
        except FerError as exc:
            return str(exc)
        if not (target and model.has(f"qnn_ctx_{target.name}")) and not model.has("onnx_qdq"):
            return f"bundle has no {model.role('onnx_qdq')!r} or QNN context file for the {model.title}"
        try:
            qnn.register_qnn()
        except FerError as exc:
            return str(exc)
        return None

    def __init__(self, model: BundleModel, config: QnnConfig | None = None, state_dir: Path | None = None) -> None:
        super().__init__(model, config, state_dir)
        cfg: QnnConfig = self.config
        target = _target(cfg)
        options = {"htp_performance_mode": cfg.htp_performance_mode}
        if cfg.profiling != "off":
            options["profiling_level"] = cfg.profiling
        started = time.perf_counter()
        ctx_kind = f"qnn_ctx_{target.name}" if target else ""
        if target and model.has(ctx_kind):
            self.path, self.source = model.path(ctx_kind), model.role(ctx_kind)
        elif model.has("onnx_qdq"):
            self.path, self.source = self._compiled(model, target, cfg), model.role("onnx_qdq")
        else:
            raise InferenceError(
                f"bundle {model.manifest.root} has no {model.role('onnx_qdq')!r} file and no QNN "
                f"context for {target.name if target else 'this SoC'}; run `fer-host export` and "
                "`fer-host compile` on the host (docs/qnn.md)"
            )
        if target:
            options.update(target.provider_options())
        self.target = target
        self.session = qnn.qnn_session(self.path, options, cpu_fallback=cfg.cpu_fallback)
        log.info(
            "qnn: %s session for the %s ready in %.2f s", self.path.name, model.title, time.perf_counter() - started
        )
        inp = self.session.get_inputs()[0]
        self._input_name = inp.name
        self.input_shape = tuple(d if isinstance(d, int) else 1 for d in inp.shape)
        self.output_shapes = [
            tuple(d if isinstance(d, int) else 1 for d in o.shape) for o in self.session.get_outputs()
        ]
        self._batched = not isinstance(inp.shape[0], int)  # a dynamic batch dimension takes all faces in one run

    def _compiled(self, model: BundleModel, target: qnn.Soc | None, cfg: QnnConfig) -> Path:
        """The QDQ model's context for ``target``, compiled once and cached by content; the QDQ itself without a SoC."""
        qdq = model.path("onnx_qdq")
        if target is None:
            log.info(
                "qnn: no SoC known (backend.qnn.soc, /sys/devices/soc0/soc_id): the %s runs from %s, compiled "
                "at every start",
                model.title,
                qdq.name,
            )
            return qdq
        if cfg.cache_dir:
            cache = Path(cfg.cache_dir).expanduser()
        elif self.state_dir is not None:
            cache = self.state_dir / "qnn"
        else:
            log.info("qnn: no backend.qnn.cache_dir and no state directory: the %s is compiled at every start",
                     model.title)
            return qdq
        key = hashlib.sha256(f"{sha256_of(qdq)} {target.name} {qnn.qnn_version()}".encode()).hexdigest()[:16]
        name = f"{model.key}_{target.name}_{key}"
        ctx = cache / f"{name}_ctx.onnx"
        if ctx.is_file() and any(cache.glob(f"{name}_ctx*.bin")):
            log.info("qnn: cached context %s for %s", ctx, target.name)
            return ctx
        try:
            built = qnn.compile_context(qdq, cache, target, name=name)
        except OSError as exc:
            raise InferenceError(f"backend.qnn.cache_dir: cannot write {cache}: {exc.strerror or exc}") from None
        log.info(
            "qnn: compiled %s for %s (htp v%d) in %.2f s, cached in %s",
            qdq.name,
            target.name,
            target.htp_arch,
            built.seconds,
            cache,
        )
        return built.onnx

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        try:
            if self._batched or len(batch) == 1:
                return list(self.session.run(None, {self._input_name: batch}))
            outs = [self.session.run(None, {self._input_name: batch[i : i + 1]}) for i in range(len(batch))]
        except Exception as exc:  # onnxruntime raises its own exception types
            raise InferenceError(f"qnn: {self.path.name}: inference failed: {' '.join(str(exc).split())}") from None
        return [np.concatenate([o[k] for o in outs]) for k in range(len(self.output_shapes))]

    def describe(self) -> str:
        cfg: QnnConfig = self.config
        where = "HTP simulator on x86_64" if qnn.htp_is_simulated() else "HTP"
        soc = f" {self.target.name} v{self.target.htp_arch}" if self.target else ""
        return f"qnn ({where}{soc}, {self.path.name}, {cfg.htp_performance_mode}, QNN {qnn.qnn_version()})"
