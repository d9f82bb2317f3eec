"""What a detector is: something that finds face boxes in a frame, with the options it declares.

Detectors have the runtimes' shape: a detector module declares ``name``,
``summary``, its ``config_class`` (its own ``detector.<name>:`` sub-section)
and the class; defining the subclass registers it (:data:`DETECTORS`), and the
``detector:`` section, ``print-config`` and the CLI help come from the
registry. What every detector shares (sizes, thresholds, the runtime of a
detector model) is :class:`DetectorConfig` itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from agent.contracts.manifest import Manifest
from agent.contracts.preprocess import Box
from agent.registry import Plugin, Registry
from agent.runtimes import BackendConfig, StartedRuntime, backend_choices
from agent.runtimes.base import Runtime

DETECTORS: Registry[Detector] = Registry("agent.detectors", "detector")


def _detector_choices() -> tuple[str, ...]:
    return DETECTORS.names()


def _detector_doc() -> str:
    return "; ".join(f"{name} = {cls.summary}" for name, cls in DETECTORS.all().items())


#: Keys of the flat ``detector:`` section before each detector had its own sub-section; read for one more release.
RENAMED_KEYS = {
    "haar_scale_factor": "haar.scale_factor",
    "haar_min_neighbors": "haar.min_neighbors",
    "full_frame_every": "haar.full_frame_every",
    "blazeface_model": "blazeface.model",
    "tiles": "blazeface.tiles",
    "yunet_model": "yunet.model",
}


@dataclass
class DetectorConfig:
    """``detector:``: which detector finds faces, what all detectors share, and one sub-section per detector."""

    type: str = field(default="blazeface", metadata={"doc": _detector_doc, "choices": _detector_choices})
    runtime: str = field(
        default="auto",
        metadata={"doc": "runtime of a detector that runs a model (blazeface); auto = the backend's runtime when the "
                         "bundle has the detector's file for it, else tflite", "choices": backend_choices},
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

    def __post_init__(self) -> None:
        DETECTORS.fill_sections(self)

    @classmethod
    def config_sections(cls) -> dict[str, tuple[type, str]]:
        return DETECTORS.config_sections("detector.type")

    @staticmethod
    def renamed_keys() -> dict[str, str]:
        return RENAMED_KEYS

    def section(self, name: str) -> Any:
        return getattr(self, name)

    def __eq__(self, other: object) -> bool:  # the sub-sections are attributes, not dataclass fields
        return isinstance(other, DetectorConfig) and vars(self) == vars(other)


@dataclass(frozen=True)
class Detection:
    box: Box  # full-frame pixels
    score: float


class Detector(Plugin):
    """Finds faces; :meth:`_finish` applies the common filter (inside the frame, ``min_face``, ``max_faces``)."""

    registry = DETECTORS
    #: The runtime that runs the detector's model and why that one (logs, stats); None = OpenCV itself.
    started: StartedRuntime | None = None

    def __init__(self, cfg: DetectorConfig, manifest: Manifest | None = None, backend: BackendConfig | None = None,
                 state_dir: Path | None = None) -> None:
        """``backend``: the config's ``backend:`` section and ``state_dir`` the resolved ``service.state_dir``, for
        detectors that run a model on a runtime. ``self.options`` is the detector's own sub-section."""
        self.cfg = cfg
        self.options = cfg.section(self.name)

    @property
    def runtime(self) -> Runtime | None:
        return self.started.runtime if self.started is not None else None

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


def create_detector(cfg: DetectorConfig, manifest: Manifest | None, backend: BackendConfig | None = None,
                    state_dir: Path | None = None) -> Detector:
    return DETECTORS.get(cfg.type)(cfg, manifest, backend, state_dir)
