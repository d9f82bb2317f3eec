"""Soft training targets from a teacher bundle (offline knowledge distillation).

FER2013's labels are noisy (about one face in ten is ambiguous or wrong) and
its classes overlap (fear/sad/surprise). A trained teacher's probabilities say
how much each face looks like every class; training the small student on a
blend of those and the hard label moves what a bigger, ensembled or
test-time-augmented model knows into the single-pass classifier the board
runs, at no inference cost. It only pays with a teacher that generalises
better than the student would on its own: distilling fer-vgg 1.2.0 into a
fresh copy of itself lost 0.7 points on PublicTest (README, model card), since
a teacher that fits 85 % of the Training faces mostly hands its own fit back.

The teacher is an exported bundle, run through its own manifest normalisation
and float TFLite file, on each face and its mirror image (averaged), once
before training: the targets are a fixed [N, classes] array, so an epoch costs
what it did without distillation. Augmentation then moves the student's input
a little away from the face the teacher saw; with small shifts, rotations and
erasing the label it deserves does not change.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from agent.contracts.errors import FerError
from agent.contracts.labels import NUM_CLASSES
from agent.contracts.manifest import Manifest, load_manifest
from agent.contracts.preprocess import normalize
from host_tools import tflite_eval


@dataclass(frozen=True)
class Teacher:
    bundle: str
    model: str
    train_accuracy: float  # the teacher's (flip-averaged) accuracy on the faces it labels


def load_teachers(bundles: list[str] | tuple[str, ...]) -> list[Manifest]:
    """Read and check every teacher bundle; called before the data set is loaded, so a typo fails fast."""
    manifests = [load_manifest(bundle) for bundle in bundles]  # label order and every file's sha256
    for bundle, manifest in zip(bundles, manifests, strict=False):
        if manifest.output.kind != "probabilities":
            raise FerError(f"{bundle}: a teacher must output probabilities, its manifest says {manifest.output.kind!r}")
        manifest.path_of("tflite")  # the float file is the one run; names the role if the bundle lacks it
    return manifests


def teacher_probabilities(manifest: Manifest, faces: np.ndarray, threads: int | None = None) -> np.ndarray:
    """``faces``: uint8 [N, 48, 48] -> float32 [N, classes], the mean of each face's and its mirror's."""
    path = manifest.path_of("tflite")
    x = normalize(faces, manifest.input.normalization)[..., None]
    flip_averaged = len(manifest.extra.get("model", {}).get("views", ["face"])) > 1  # already, inside the graph
    predict = tflite_eval.predict if flip_averaged else tflite_eval.predict_mirrored
    return predict(path, x, threads=threads).astype(np.float32)


def soft_targets(
    labels: np.ndarray, teacher: np.ndarray, alpha: float, temperature: float = 1.0, base: np.ndarray | None = None
) -> np.ndarray:
    """(1 - alpha) * one-hot(label) + alpha * teacher probabilities softened by ``temperature``.

    ``base`` replaces one-hot(label) when the run trains on other targets (FER+ votes).

    Softening probabilities p by T is softmax(log p / T), the same as dividing the logits by T.
    """
    if not 0.0 <= alpha <= 1.0 or temperature <= 0:
        raise ValueError(f"needs 0 <= alpha <= 1 and temperature > 0, got {alpha} and {temperature}")
    soft = np.power(np.clip(teacher, 1e-12, 1.0), 1.0 / temperature)
    soft /= soft.sum(axis=1, keepdims=True)
    if base is None:
        base = np.eye(NUM_CLASSES, dtype=np.float32)[labels]
    return ((1.0 - alpha) * base + alpha * soft).astype(np.float32)


def distillation_targets(
    teachers: list[Manifest],
    faces: np.ndarray,
    labels: np.ndarray,
    alpha: float,
    temperature: float = 1.0,
    base: np.ndarray | None = None,
) -> tuple[np.ndarray, list[Teacher]]:
    """Targets from the mean of the teachers' probabilities; reports each teacher's accuracy on ``faces``."""
    if not teachers:
        raise ValueError("needs at least one teacher bundle")
    used, total = [], np.zeros((len(labels), NUM_CLASSES), np.float32)
    for manifest in teachers:
        probs = teacher_probabilities(manifest, faces)
        if probs.shape != total.shape:
            raise FerError(f"{manifest.root}: teacher output has shape {probs.shape[1:]}, expected ({NUM_CLASSES},)")
        used.append(
            Teacher(
                str(manifest.root),
                f"{manifest.model_name} {manifest.model_version}",
                round(float((probs.argmax(1) == labels).mean()), 4),
            )
        )
        total += probs
    return soft_targets(labels, total / len(teachers), alpha, temperature, base), used
