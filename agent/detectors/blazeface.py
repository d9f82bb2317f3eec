"""BlazeFace detector: MediaPipe's short- or full-range face model, on the configured runtime.

The models come from the bundle (roles ``blazeface_short``/``blazeface_full``,
``detector.blazeface.model``, plus converted files such as
``blazeface_short_dlc`` or the QNN ones) and run
on whichever runtime ``detector.runtime`` (by default: the backend's, when the
bundle has the detector's file for it, else tflite) allows. The SSD anchors,
box decoding and weighted NMS follow MediaPipe's
``face_detection_short_range.pbtxt`` / ``face_detection_full_range.pbtxt``
(SsdAnchorsCalculator, TensorsToDetectionsCalculator, NonMaxSuppression with
``WEIGHTED`` blending), reimplemented in numpy so no MediaPipe is needed. ``detector.blazeface.tiles``
also searches overlapping tiles (:mod:`agent.detectors.tiling`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from agent.boxes import iou_matrix
from agent.contracts.errors import FerError
from agent.contracts.manifest import Manifest
from agent.contracts.preprocess import Box
from agent.detectors import Detection, Detector, DetectorConfig
from agent.detectors.tiling import Tiling
from agent.runtimes import BackendConfig, BundleModel, create_runtime, runtime_for

log = logging.getLogger(__name__)

# MediaPipe SsdAnchorsCalculatorOptions of the two published models.
BLAZEFACE_OPTIONS = {
    "short": {"input_size": 128, "strides": (8, 16, 16, 16), "interpolated_scale_aspect_ratio": 1.0},
    "full": {"input_size": 192, "strides": (4,), "interpolated_scale_aspect_ratio": 0.0},
}
_RAW_SCORE_CLIP = 100.0  # TensorsToDetectionsCalculator score_clipping_thresh


def ssd_anchors(
    input_size: int, strides: tuple[int, ...], interpolated_scale_aspect_ratio: float, anchor_offset: float = 0.5
) -> np.ndarray:
    """Anchor centres ``[N, 2]`` (x, y in 0..1), as SsdAnchorsCalculator with ``fixed_anchor_size: true``.

    With a fixed anchor size every anchor is 1x1, so only the centres matter;
    each feature-map cell gets one anchor per aspect ratio (1.0) plus one for
    the interpolated scale, for every layer that shares the stride.
    """
    centres = []
    i = 0
    while i < len(strides):
        j = i
        per_cell = 0
        while j < len(strides) and strides[j] == strides[i]:
            per_cell += 1 + (1 if interpolated_scale_aspect_ratio > 0 else 0)
            j += 1
        fm = int(np.ceil(input_size / strides[i]))
        ys, xs = np.mgrid[0:fm, 0:fm]
        cell = np.stack([(xs + anchor_offset) / fm, (ys + anchor_offset) / fm], axis=-1).reshape(-1, 2)
        centres.append(np.repeat(cell, per_cell, axis=0))
        i = j
    return np.concatenate(centres).astype(np.float32)


def weighted_nms(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> list[tuple[np.ndarray, float]]:
    """MediaPipe's WEIGHTED suppression: overlapping boxes are averaged by score, not dropped."""
    order = np.argsort(-scores)
    boxes, scores = boxes[order], scores[order]
    out = []
    remaining = np.arange(len(scores))
    while remaining.size:
        top = remaining[0]
        ious = iou_matrix(boxes[top : top + 1], boxes[remaining])[0]
        group = remaining[ious > threshold]
        if group.size == 0:
            group = remaining[:1]
        w = scores[group][:, None]
        out.append(((boxes[group] * w).sum(axis=0) / w.sum(), float(scores[top])))
        remaining = remaining[ious <= threshold]
        remaining = remaining[remaining != top]
    return out


@dataclass
class BlazeFaceConfig:
    model: Literal["short", "full"] = field(
        default="short",
        metadata={"doc": "BlazeFace variant: short (faces within ~2 m, 128x128) or full (up to ~5 m, 192x192)"},
    )
    tiles: int = field(
        default=2,
        metadata={"doc": "also search an n x n grid of overlapping tiles (n*n more model runs), so faces a fifth of "
                         "the frame or smaller reach the model at n times the scale; 1 = the whole frame only",
                  "min": 1, "max": 4},
    )


class BlazeFaceDetector(Detector):
    name = "blazeface"
    summary = "MediaPipe BlazeFace from the bundle, on the backend's runtime when it can"
    config_class = BlazeFaceConfig

    def __init__(self, cfg: DetectorConfig, manifest: Manifest, backend: BackendConfig | None = None,
                 state_dir: Path | None = None) -> None:
        super().__init__(cfg, manifest, backend, state_dir)
        options: BlazeFaceConfig = self.options
        model = BundleModel(manifest, f"blazeface_{options.model}")
        if model.key not in manifest.files:
            raise FerError(
                f"detector.blazeface.model: the bundle {manifest.root} has no {model.key!r} file; "
                "export the bundle with the host tools or use detector.type: haar"
            )
        opts = BLAZEFACE_OPTIONS[options.model]
        backend = backend if backend is not None else BackendConfig()
        name, why = runtime_for(backend, model, cfg.runtime)
        self.started = create_runtime(backend, model, name, why, state_dir=state_dir)
        runtime = self._runtime = self.started.runtime
        shape = runtime.input_shape
        self.size = (
            int(shape[1]) if shape else int(manifest.files[model.key].extra.get("input_size", opts["input_size"]))
        )
        if self.size != opts["input_size"]:
            raise FerError(
                f"{manifest.path_of(model.key)}: input is {self.size}x{self.size}, "
                f"expected {opts['input_size']} for {model.key}"
            )
        self.anchors = ssd_anchors(self.size, opts["strides"], opts["interpolated_scale_aspect_ratio"])
        outputs = runtime.output_shapes
        self._indices = self._output_indices([int(np.prod(s[1:])) for s in outputs]) if outputs else None
        self._canvas = np.zeros((self.size, self.size, 3), dtype=np.uint8)
        self._layout: tuple[int, int, int, int] | None = None
        self.tiling = Tiling(options.tiles, self.size)
        self._input = np.zeros((1, self.size, self.size, 3), dtype=np.float32)
        # logit threshold: sigmoid(x) > t  <=>  x > log(t / (1 - t))
        t_ = min(max(cfg.score_threshold, 1e-6), 1 - 1e-6)
        self._logit_threshold = float(np.log(t_ / (1 - t_)))

    def _output_indices(self, sizes: list[int]) -> tuple[int, int]:
        """Indices of the box regressors (16 per anchor) and scores (1 per anchor) among the outputs."""
        n = len(self.anchors)
        try:
            return sizes.index(16 * n), sizes.index(n)
        except ValueError:
            raise FerError(
                f"{self._runtime.describe()}: outputs of {sizes} values do not fit {n} anchors "
                "(16 box values and 1 score each); not a MediaPipe BlazeFace model?"
            ) from None

    def detect(self, frame: np.ndarray, grey: np.ndarray) -> list[Detection]:
        h, w = frame.shape[:2]
        boxes, scores = self.tiling.search(frame, self._run)
        if boxes.size == 0:
            return []
        dets = [Detection(Box(int(round(b[0])), int(round(b[1])), int(round(b[2] - b[0])), int(round(b[3] - b[1]))), sc)
                for b, sc in weighted_nms(boxes, scores, self.cfg.nms_threshold)]
        return self._finish(dets, w, h)

    def _run(self, image: np.ndarray, ox: int, oy: int, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """The model on ``image`` letterboxed (MediaPipe FIT): boxes ``[K, 4]`` (x0, y0, x1, y1) in frame pixels
        (``image`` is the frame shrunk by ``k``, placed at (ox, oy) in it), and their scores, before suppression."""
        h, w = image.shape[:2]
        s = self.size / max(h, w)
        rw, rh = max(1, int(round(w * s))), max(1, int(round(h * s)))
        px, py = (self.size - rw) // 2, (self.size - rh) // 2
        if (rw, rh, px, py) != self._layout:  # another shape: clear the padding once
            self._canvas[:] = 0
            self._layout = (rw, rh, px, py)
        region = self._canvas[py : py + rh, px : px + rw]
        if px == 0 and image.flags.c_contiguous:  # landscape: full-width rows are contiguous, resize in place
            cv2.resize(image, (rw, rh), dst=region, interpolation=cv2.INTER_AREA)
        else:
            region[:] = cv2.resize(image, (rw, rh), interpolation=cv2.INTER_AREA)
        cv2.cvtColor(self._canvas, cv2.COLOR_BGR2RGB, dst=self._canvas)  # padding stays 0
        np.multiply(self._canvas, np.float32(1 / 127.5), out=self._input[0], dtype=np.float32)
        np.subtract(self._input, np.float32(1.0), out=self._input)
        outputs = self._runtime.run(self._input)
        if self._indices is None:  # a runtime that knows output shapes only after a run (snpe-net-run)
            self._indices = self._output_indices([o[0].size for o in outputs])
        boxes_i, scores_i = self._indices
        raw_scores = outputs[scores_i][0].reshape(-1)
        keep = np.nonzero(raw_scores > self._logit_threshold)[0]
        if keep.size == 0:
            return np.zeros((0, 4)), np.zeros(0, np.float32)
        raw = outputs[boxes_i][0].reshape(-1, 16)[keep, :4] / self.size
        scores = 1.0 / (1.0 + np.exp(-np.clip(raw_scores[keep], -_RAW_SCORE_CLIP, _RAW_SCORE_CLIP)))
        cx = raw[:, 0] + self.anchors[keep, 0]
        cy = raw[:, 1] + self.anchors[keep, 1]
        boxes = np.stack([cx - raw[:, 2] / 2, cy - raw[:, 3] / 2, cx + raw[:, 2] / 2, cy + raw[:, 3] / 2], axis=1)
        boxes = (boxes * self.size - (px, py, px, py)) / s * k + (ox, oy, ox, oy)
        return boxes, scores
