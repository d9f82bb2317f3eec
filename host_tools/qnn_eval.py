"""Run a bundle's ONNX QDQ model or QNN context over many faces on the QNN HTP backend (``evaluate --backend qnn``).

On x86_64 the HTP is simulated by libQnnHtp.so: the numbers are the HTP's
(same quantised arithmetic), the timing is the simulator's and says nothing
about NPU latency. The models take one face per run (batch 1).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from agent.contracts import qnn
from agent.contracts.errors import FerError

SIMULATOR_NOTE = "x86_64: QNN HTP simulator timing, never NPU time"


def timing_note() -> str:
    return SIMULATOR_NOTE if qnn.htp_is_simulated() else "on-device QNN HTP (NPU) timing"


def predict(model_path: str | Path, x: np.ndarray, provider_options: dict[str, str] | None = None,
            progress=None) -> tuple[np.ndarray, float]:
    """``x``: float32 [N, H, W, C] normalised faces -> ([N, classes] outputs, seconds per face)."""
    sess = qnn.qnn_session(model_path, provider_options)
    name = sess.get_inputs()[0].name
    out = []
    start = time.perf_counter()
    for i in range(len(x)):
        try:
            out.append(sess.run(None, {name: np.ascontiguousarray(x[i:i + 1], dtype=np.float32)})[0])
        except Exception as exc:
            raise FerError(f"{model_path}: QNN HTP run failed on face {i}: {' '.join(str(exc).split())}") from None
        if progress is not None and (i + 1) % 500 == 0:
            progress(i + 1, len(x))
    seconds = (time.perf_counter() - start) / max(1, len(x))
    return (np.concatenate(out) if out else np.zeros((0, 0), np.float32)), seconds
