"""The face classifier: the bundle's expression model on whichever runtime was chosen.

The model adapter between the pipeline and a runtime: it knows the manifest's
input shape and labels, checks that the file it runs agrees with them, and
turns a batch of preprocessed faces into one score row per face (as the model
outputs them: probabilities or logits, per ``manifest.output.kind``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from agent.contracts.manifest import Manifest
from agent.runtimes.base import RUNTIMES, BundleModel, InferenceError, Runtime


class FaceClassifier:
    def __init__(self, manifest: Manifest, runtime: Runtime) -> None:
        self.manifest = manifest
        self.runtime = runtime
        self.num_labels = len(manifest.labels)
        if runtime.model.output_sizes != (self.num_labels,):
            raise ValueError("build the classifier's runtime for FaceClassifier.model(manifest), which tells it "
                             "the output size to check")
        spec = manifest.input
        self.face_shape = (spec.height, spec.width, spec.channels)
        where = runtime.path or manifest.root
        shape = runtime.input_shape
        if shape is not None and tuple(shape[1:]) != self.face_shape:
            raise InferenceError(f"{where}: input shape {list(shape)} does not match the manifest's {list(spec.shape)}")
        outputs = runtime.output_shapes
        if outputs is not None and int(np.prod(outputs[0][1:])) != self.num_labels:
            raise InferenceError(f"{where}: output has {int(np.prod(outputs[0][1:]))} scores, "
                                 f"the manifest lists {self.num_labels} labels")

    @staticmethod
    def model(manifest: Manifest) -> BundleModel:
        """The classifier's model; a runtime answering other than one score per label fails the frame."""
        return BundleModel(manifest, "classifier", output_sizes=(len(manifest.labels),))

    @classmethod
    def on(cls, manifest: Manifest, runtime: str, config: Any = None, state_dir: Path | None = None
           ) -> FaceClassifier:
        """The classifier on the runtime named ``runtime`` (benchmarks, tests, host checks), no fallback."""
        return cls(manifest, RUNTIMES.get(runtime)(cls.model(manifest), config, state_dir=state_dir))

    @property
    def name(self) -> str:
        """The runtime in use now (live: it changes when a fallback takes over)."""
        return self.runtime.name

    def infer(self, faces: np.ndarray) -> np.ndarray:
        """``faces``: float32 ``[N, H, W, C]`` normalised per the manifest -> float32 ``[N, labels]``."""
        if faces.ndim != 4 or faces.shape[1:] != self.face_shape:
            raise InferenceError(f"faces must be [N,{','.join(map(str, self.face_shape))}] float32, "
                                 f"got {list(faces.shape)}")
        if len(faces) == 0:
            return np.zeros((0, self.num_labels), dtype=np.float32)
        scores = self.runtime.run(faces)[0].reshape(len(faces), -1)
        if scores.shape[1] != self.num_labels:
            raise InferenceError(f"{self.runtime.name}: {scores.shape[1]} scores per face, "
                                 f"the manifest lists {self.num_labels} labels")
        return scores

    def describe(self) -> str:
        return self.runtime.describe()

    def close(self) -> None:
        self.runtime.close()
