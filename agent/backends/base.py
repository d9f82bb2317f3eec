"""The backend interface: load a bundle, infer a batch of faces -> scores.

Kept deliberately small so a subprocess runtime (snpe-net-run) and an
in-process one (LiteRT, later the SNPE C API or a QNN context) are
interchangeable without touching the rest of the agent.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np

from agent.contracts.errors import FerError
from agent.contracts.manifest import Manifest


class BackendError(FerError):
    """Inference failed (tool exit, missing output, timeout); the frame is counted as failed."""


class Backend(ABC):
    name: str = "base"

    def __init__(self, manifest: Manifest, config: Any = None) -> None:
        """``config`` is the backend's own dataclass (``TFLiteConfig``, ``SnpeConfig``...)."""
        self.manifest = manifest
        self.config = config

    @abstractmethod
    def infer(self, faces: np.ndarray) -> np.ndarray:
        """``faces``: float32 ``[N, H, W, 1]`` normalised per the manifest.

        Returns float32 ``[N, num_labels]`` exactly as the model outputs them
        (probabilities or logits, per ``manifest.output.kind``).
        """

    def describe(self) -> str:
        """One line for logs and the status message (runtime, file, threads...)."""
        return self.name

    def close(self) -> None:
        """Release the runtime; default does nothing."""
