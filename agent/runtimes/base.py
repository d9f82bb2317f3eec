"""What a runtime is: something that moves float32 tensors in and out of one model file.

A runtime knows file formats and processes (LiteRT, snpe-net-run, ONNX
Runtime with QNN), nothing about faces: the model adapters
(:class:`agent.classify.FaceClassifier`, the BlazeFace detector) own their
pre/post-processing and checks and run on whichever runtime the config and
the bundle allow. A runtime module declares ``name``, ``config_class`` and
the class; defining the subclass registers it (:data:`RUNTIMES`, see
:class:`agent.registry.Plugin`).

"Backend" is the user's word for the runtime the classifier runs on (see
:mod:`agent.runtimes`); SNPE's cpu/gpu/dsp choice is its *target* and
LiteRT's Python package its *interpreter package*.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Optional

import numpy as np

from agent.contracts.errors import InferenceError
from agent.contracts.manifest import FileEntry, Manifest
from agent.registry import NoConfig, Plugin, Registry

__all__ = ["RUNTIMES", "BundleModel", "InferenceError", "NoConfig", "Runtime"]


RUNTIMES: Registry[Runtime] = Registry("agent.runtimes", "runtime")


@dataclass(frozen=True)
class BundleModel:
    """One model of the bundle (the classifier, or a detector) and the file roles it has.

    The classifier's roles are the bare kinds (``tflite``, ``tflite_int8``,
    ``dlc_htp``, ``onnx_qdq``...); every other model prefixes them with its key
    (``blazeface_short_dlc``), except its TFLite file, which is the key itself
    (``blazeface_short``): the names the bundle has always used.

    ``output_sizes`` is what the model adapter expects of the outputs: values
    per item of each (None = unchecked). Every runtime built for this model,
    the fallback included, checks its answers against it
    (:meth:`Runtime.check`), so a wrongly shaped answer fails the frame like
    any other inference error and a fallback counts it.
    """

    manifest: Manifest
    key: str = "classifier"
    output_sizes: Optional[tuple[int, ...]] = None

    def role(self, kind: str) -> str:
        if self.key == "classifier":
            return kind
        return self.key if kind == "tflite" else f"{self.key}_{kind}"

    def has(self, kind: str) -> bool:
        return self.manifest.has(self.role(kind))

    def entry(self, kind: str) -> FileEntry:
        self.manifest.path_of(self.role(kind))  # names the role if absent
        return self.manifest.files[self.role(kind)]

    def path(self, kind: str) -> Path:
        return self.manifest.path_of(self.role(kind))

    @property
    def title(self) -> str:
        return "classifier" if self.key == "classifier" else self.key


class Runtime(Plugin, ABC):
    """What every runtime provides: the model it runs, its config section, the file, the shapes, a description.

    A subclass sets :attr:`path` (and the shapes where its file declares them) in ``__init__``.
    """

    registry = RUNTIMES
    #: ``backend.type: auto`` tries runtimes from the highest priority down; None = never chosen by auto.
    auto_priority: ClassVar[int | None] = None

    #: The model file this runtime runs (errors and logs name it); None = no file (a test stand-in).
    path: Path | None = None
    #: Input shape ``[1, H, W, C]`` as the file declares it; None = unknown before a run (snpe-net-run).
    input_shape: tuple[int, ...] | None = None
    #: Shape of each output ``[1, ...]``, in the model's order; None = unknown before a run.
    output_shapes: list[tuple[int, ...]] | None = None

    def __init__(self, model: BundleModel, config: Any = None, state_dir: Path | None = None) -> None:
        """``state_dir``: where a runtime may keep files across restarts (``service.state_dir`` resolved);
        None = keep nothing there."""
        self.model = model
        self.config = config if config is not None else self.config_class()
        self.state_dir = state_dir

    def check(self, outputs: list[np.ndarray], n: int) -> list[np.ndarray]:
        """``outputs`` unchanged when they match the model's ``output_sizes`` for ``n`` items, else InferenceError."""
        want = list(self.model.output_sizes) if self.model.output_sizes is not None else None
        if want is not None:
            got = [int(o.size) // max(n, 1) for o in outputs]
            if got[: len(want)] != want or any(o.size % max(n, 1) for o in outputs):
                raise InferenceError(f"{self.name}: outputs of {got} values per item, expected {want}")
        return outputs

    @classmethod
    def unavailable(cls, model: BundleModel, config: Any) -> str | None:
        """Why this runtime cannot run ``model`` here (for ``auto`` and the detector), or None; never raises."""
        return None

    @abstractmethod
    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        """``batch``: float32 ``[N, *input_shape[1:]]``; returns each output as float32 ``[N, ...]``.

        Outputs come in the model's order; a runtime that cannot know their
        shapes (snpe-net-run's raw files) returns them flat, ``[N, size]``.
        """

    def describe(self) -> str:
        """One line for logs and the status message (runtime, file, threads...)."""
        return self.name

    def close(self) -> None:  # noqa: B027 - most runtimes hold nothing to release
        """Release the runtime; default does nothing."""
