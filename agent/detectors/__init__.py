"""Detect stage: face boxes in frame pixels; one module per detector, discovered by :data:`DETECTORS`.

Haar and YuNet detect on a frame downscaled to ``detector.detect_width``
(faces the classifier can use are large anyway), BlazeFace on its own
letterboxed input, on whichever runtime the config and the bundle allow;
boxes are mapped back to full-frame pixels and the common filter applies
``min_face`` and ``max_faces`` (largest first). A new detector is one module
here with a :class:`Detector` subclass that sets ``name``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Optional

import numpy as np

from agent.contracts.manifest import Manifest
from agent.contracts.preprocess import Box
from agent.registry import Registry

DETECTORS: Registry[Detector] = Registry("agent.detectors", "detector")


def _detector_choices() -> tuple[str, ...]:
    return DETECTORS.names()


def _detector_doc() -> str:
    return "; ".join(f"{name} = {cls.summary}" for name, cls in DETECTORS.all().items())


def _runtime_choices() -> tuple[str, ...]:
    from agent.runtimes import RUNTIMES

    return ("auto", *RUNTIMES.names())


@dataclass
class DetectorConfig:
    type: str = field(default="blazeface", metadata={"doc": _detector_doc, "choices": _detector_choices})
    runtime: str = field(
        default="auto",
        metadata={"doc": "blazeface: runtime of the detector model; auto = the backend's runtime when the bundle "
                         "has the detector's file for it, else tflite", "choices": _runtime_choices},
    )
    blazeface_model: Literal["short", "full"] = field(
        default="short",
        metadata={"doc": "BlazeFace variant: short (faces within ~2 m, 128x128) or full (up to ~5 m, 192x192)"},
    )
    tiles: int = field(
        default=2,
        metadata={"doc": "blazeface: also search an n x n grid of overlapping tiles (n*n more model runs), so faces "
                         "a fifth of the frame or smaller reach the model at n times the scale; 1 = the whole frame "
                         "only", "min": 1, "max": 4},
    )
    yunet_model: Optional[str] = field(
        default=None, metadata={"doc": "path to a YuNet .onnx model (detector.type: yunet)"}
    )
    detect_width: int = field(
        default=320,
        metadata={
            "doc": "haar/yunet: downscale frames to this width before detecting (0 = full size); boxes are mapped "
            "back. Haar keeps min_face at least 24 px (its window) whatever this says",
            "min": 0,
        },
    )
    min_face: int = field(
        default=48,
        metadata={"doc": "ignore faces smaller than this many frame pixels (the classifier sees 48x48)", "min": 1},
    )
    max_faces: int = field(
        default=4, metadata={"doc": "classify at most this many faces per frame (largest first)", "min": 1}
    )
    margin: float = field(
        default=0.0,
        metadata={"doc": "grow the face square by this fraction of its side on each side", "min": 0.0, "max": 1.0},
    )
    score_threshold: float = field(
        default=0.5, metadata={"doc": "blazeface/yunet: minimum detection score", "min": 0.0, "max": 1.0}
    )
    nms_threshold: float = field(
        default=0.3, metadata={"doc": "blazeface/yunet: IoU above which boxes are merged", "min": 0.0, "max": 1.0}
    )
    haar_scale_factor: float = field(default=1.15, metadata={"doc": "haar: image pyramid step", "min": 1.01})
    haar_min_neighbors: int = field(default=5, metadata={"doc": "haar: detections needed to keep a box", "min": 0})
    full_frame_every: int = field(
        default=3,
        metadata={
            "doc": "haar: search the whole frame every n-th frame and in between only around the faces found "
            "last (1 = whole frame every time; more is cheaper, and a new face is found up to n-1 frames later)",
            "min": 1,
        },
    )


@dataclass(frozen=True)
class Detection:
    box: Box  # full-frame pixels
    score: float


class Detector:
    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    #: The runtime that runs the detector's model (BlazeFace), for logs and stats; None = OpenCV itself.
    runtime: Any = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if isinstance(cls.__dict__.get("name"), str) and cls.__dict__["name"]:
            DETECTORS.register(cls)

    def __init__(self, cfg: DetectorConfig, manifest: Manifest, backend: Any = None) -> None:
        """``backend``: the config's ``backend:`` section, for detectors that run a model on a runtime."""
        self.cfg = cfg

    def detect(self, frame: np.ndarray, grey: np.ndarray) -> list[Detection]:
        """``frame``: BGR uint8; ``grey``: the same frame in grey (converted once per frame by the caller)."""
        raise NotImplementedError

    def describe(self) -> str:
        return self.name if self.runtime is None else f"{self.name} on {self.runtime.describe()}"

    def close(self) -> None:
        if self.runtime is not None:
            self.runtime.close()

    def _scale(self, width: int) -> float:
        dw = self.cfg.detect_width
        return dw / width if 0 < dw < width else 1.0

    def _finish(self, dets: list[Detection], frame_w: int, frame_h: int) -> list[Detection]:
        out = []
        for d in dets:
            b = d.box
            x0, y0 = max(0, b.x), max(0, b.y)
            x1, y1 = min(frame_w, b.x + b.w), min(frame_h, b.y + b.h)
            if x1 - x0 < 1 or y1 - y0 < 1 or max(b.w, b.h) < self.cfg.min_face:
                continue
            out.append(Detection(Box(x0, y0, x1 - x0, y1 - y0), d.score))
        out.sort(key=lambda d: (-d.box.w * d.box.h, d.box.y, d.box.x))  # largest first; stable across runs
        return out[: self.cfg.max_faces]


def create_detector(cfg: DetectorConfig, manifest: Manifest, backend: Any = None) -> Detector:
    return DETECTORS.get(cfg.type)(cfg, manifest, backend)


__all__ = ["DETECTORS", "Detection", "Detector", "DetectorConfig", "create_detector"]
