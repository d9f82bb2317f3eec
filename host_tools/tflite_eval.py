"""Run a bundle's TFLite files over many faces on the host (evaluation, export checks).

Opens files with the agent's own loader (:mod:`agent.contracts.litert`: LiteRT
when installed, what the board runs); batches by resizing the input tensor,
which this all-convolutional model allows.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from agent.contracts.litert import load_interpreter


def predict(model_path: str | Path, x: np.ndarray, batch: int = 256, threads: int | None = None) -> np.ndarray:
    """``x``: float32 [N, H, W, 1] normalised faces -> float32 [N, classes] model outputs."""
    it = load_interpreter(model_path, threads=threads)
    inp = it.get_input_details()[0]
    out_index = it.get_output_details()[0]["index"]
    results = []
    current = None
    for start in range(0, len(x), batch):
        chunk = np.ascontiguousarray(x[start:start + batch], dtype=np.float32)
        if current != len(chunk):
            it.resize_tensor_input(inp["index"], [len(chunk), *chunk.shape[1:]])
            it.allocate_tensors()
            current = len(chunk)
        it.set_tensor(inp["index"], chunk)
        it.invoke()
        results.append(it.get_tensor(out_index).copy())
    return np.concatenate(results) if results else np.zeros((0, 0), np.float32)


def predict_mirrored(model_path: str | Path, x: np.ndarray, threads: int | None = None) -> np.ndarray:
    """Mean of the outputs for each face and its mirror image (flip test-time augmentation)."""
    mirrored = np.ascontiguousarray(x[:, :, ::-1])
    return (predict(model_path, x, threads=threads) + predict(model_path, mirrored, threads=threads)) / 2


def tensor_names(model_path: str | Path) -> tuple[str, str]:
    it = load_interpreter(model_path, threads=None)
    return it.get_input_details()[0]["name"], it.get_output_details()[0]["name"]
