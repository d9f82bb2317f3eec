"""Detect stage: face boxes in frame pixels from Haar, BlazeFace or YuNet.

Haar and YuNet detect on a frame downscaled to ``detector.detect_width``
(faces the classifier can use are large anyway), BlazeFace on its own
letterboxed 128x128 or 192x192 input; boxes are mapped back to full-frame
pixels and the common filter applies ``min_face`` and ``max_faces`` (largest
first).

BlazeFace is MediaPipe's face detector; its TFLite models come from the
bundle (roles ``blazeface_short``/``blazeface_full``) and run through the
tflite backend's :func:`~agent.backends.tflite.load_interpreter`. The SSD
anchors, box decoding and weighted NMS follow MediaPipe's
``face_detection_short_range.pbtxt`` / ``face_detection_full_range.pbtxt``
(SsdAnchorsCalculator, TensorsToDetectionsCalculator, NonMaxSuppression with
``WEIGHTED`` blending), reimplemented in numpy so no MediaPipe is needed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from agent.config import DetectorConfig, TFLiteConfig
from agent.contracts.errors import FerError
from agent.contracts.manifest import Manifest
from agent.contracts.preprocess import Box

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Detection:
    box: Box  # full-frame pixels
    score: float


class Detector:
    name = "detector"

    def __init__(self, cfg: DetectorConfig) -> None:
        self.cfg = cfg

    def detect(self, frame: np.ndarray, grey: np.ndarray) -> list[Detection]:
        """``frame``: BGR uint8; ``grey``: the same frame in grey (converted once per frame by the caller)."""
        raise NotImplementedError

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


# --------------------------------------------------------------------------- Haar


HAAR_WINDOW = 24  # haarcascade_frontalface_default.xml's detection window


def haar_cascade_path() -> Path:
    return Path(cv2.data.haarcascades) / "haarcascade_frontalface_default.xml"


class HaarDetector(Detector):
    """OpenCV's frontal-face cascade.

    With ``full_frame_every: n > 1`` the whole frame is searched every n-th
    frame only; in between the cascade runs in a window around each face
    found last (grown by a third of its side), scaled so that face is ~48 px,
    for sizes 0.75-1.33x of it. Faces move little between frames, so that finds them again for a
    fraction of the cost (the cascade's cost grows with the searched area); a
    new face is found at the next whole-frame search.
    """

    name = "haar"

    def __init__(self, cfg: DetectorConfig) -> None:
        super().__init__(cfg)
        if not hasattr(cv2, "CascadeClassifier"):
            raise FerError(
                "detector.type: haar needs cv2.CascadeClassifier, which OpenCV 5 removed; "
                "install opencv-python-headless<5 or use detector.type: blazeface"
            )
        path = haar_cascade_path()
        self.cascade = cv2.CascadeClassifier(str(path))
        if self.cascade.empty():
            raise FerError(f"{path}: cannot load the Haar cascade")
        self._small: np.ndarray | None = None
        self._last: list[Detection] = []
        self._since_full = cfg.full_frame_every  # the first frame is searched whole

    def detect(self, frame: np.ndarray, grey: np.ndarray) -> list[Detection]:
        h, w = grey.shape[:2]
        if self._since_full + 1 >= self.cfg.full_frame_every or not self._last:
            self._since_full = 0
            self._last = self._finish(self._search_frame(grey), w, h)
        else:
            self._since_full += 1
            self._last = self._finish(self._search_windows(grey, self._last), w, h)
        return self._last

    def _search_frame(self, grey: np.ndarray) -> list[Detection]:
        h, w = grey.shape[:2]
        # Never shrink a min_face face below the cascade's 24x24 window: it could not be found at all.
        s = min(1.0, max(self._scale(w), HAAR_WINDOW / self.cfg.min_face))
        img = grey
        if s != 1.0:
            size = (int(round(w * s)), int(round(h * s)))
            if self._small is None or self._small.shape[::-1] != size:
                self._small = np.empty(size[::-1], dtype=np.uint8)
            img = cv2.resize(grey, size, dst=self._small, interpolation=cv2.INTER_AREA)
        return self._cascade(img, s, max(HAAR_WINDOW, int(self.cfg.min_face * s)), 0, 0, 0)

    def _search_windows(self, grey: np.ndarray, previous: list[Detection]) -> list[Detection]:
        h, w = grey.shape[:2]
        found: list[Detection] = []
        for prev in previous:
            b = prev.box
            side = max(b.w, b.h)
            pad = side // 3
            x0, y0 = max(0, b.x - pad), max(0, b.y - pad)
            x1, y1 = min(w, b.x + b.w + pad), min(h, b.y + b.h + pad)
            s = min(1.0, 2 * HAAR_WINDOW / side)
            crop = grey[y0:y1, x0:x1]
            img = cv2.resize(crop, None, fx=s, fy=s, interpolation=cv2.INTER_AREA) if s < 1.0 else crop
            lo = max(HAAR_WINDOW, int(0.75 * side * s))
            dets = self._cascade(img, s, lo, int(1.33 * side * s) + 1, x0, y0)
            if dets:
                best = max(dets, key=lambda d: d.box.w)
                if all(_iou(best.box, f.box) < 0.5 for f in found):  # two windows, one face
                    found.append(best)
        return found

    def _cascade(self, img: np.ndarray, s: float, min_side: int, max_side: int, ox: int, oy: int) -> list[Detection]:
        """Run the cascade on ``img`` (the frame or a window, scaled by ``s``, at offset ox, oy in the frame)."""
        rects = self.cascade.detectMultiScale(
            img,
            scaleFactor=self.cfg.haar_scale_factor,
            minNeighbors=self.cfg.haar_min_neighbors,
            minSize=(min_side, min_side),
            maxSize=(max_side, max_side),
        )
        return [
            Detection(Box(ox + int(round(x / s)), oy + int(round(y / s)), int(round(bw / s)), int(round(bh / s))), 1.0)
            for (x, y, bw, bh) in (rects if len(rects) else [])
        ]


def _iou(a: Box, b: Box) -> float:
    ix = max(0, min(a.x + a.w, b.x + b.w) - max(a.x, b.x))
    iy = max(0, min(a.y + a.h, b.y + b.h) - max(a.y, b.y))
    inter = ix * iy
    return inter / (a.w * a.h + b.w * b.h - inter)


# --------------------------------------------------------------------------- BlazeFace

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


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of boxes ``[N, 4]`` x ``[M, 4]`` given as (x0, y0, x1, y1)."""
    ix0 = np.maximum(a[:, None, 0], b[None, :, 0])
    iy0 = np.maximum(a[:, None, 1], b[None, :, 1])
    ix1 = np.minimum(a[:, None, 2], b[None, :, 2])
    iy1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(ix1 - ix0, 0, None) * np.clip(iy1 - iy0, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


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


class BlazeFaceDetector(Detector):
    name = "blazeface"

    def __init__(self, cfg: DetectorConfig, manifest: Manifest, tflite_cfg: TFLiteConfig | None = None) -> None:
        from agent.backends.tflite import load_interpreter

        super().__init__(cfg)
        role = f"blazeface_{cfg.blazeface_model}"
        if role not in manifest.files:
            raise FerError(
                f"detector.blazeface_model: the bundle {manifest.root} has no {role!r} file; "
                "export the bundle with the host tools or use detector.type: haar"
            )
        opts = BLAZEFACE_OPTIONS[cfg.blazeface_model]
        t = tflite_cfg or TFLiteConfig()
        self.interpreter = load_interpreter(
            manifest.path_of(role), threads=t.threads, delegate=t.delegate, delegate_options=t.delegate_options
        )
        inp = self.interpreter.get_input_details()[0]
        self.size = int(inp["shape"][1])
        if self.size != opts["input_size"]:
            raise FerError(
                f"{manifest.path_of(role)}: input is {self.size}x{self.size}, expected {opts['input_size']} for {role}"
            )
        self._in_index = inp["index"]
        outs = self.interpreter.get_output_details()
        self._boxes_index = next(o["index"] for o in outs if o["shape"][-1] == 16)
        self._scores_index = next(o["index"] for o in outs if o["shape"][-1] == 1)
        self.anchors = ssd_anchors(self.size, opts["strides"], opts["interpolated_scale_aspect_ratio"])
        n_out = int(next(o["shape"][1] for o in outs if o["index"] == self._boxes_index))
        if n_out != len(self.anchors):
            raise FerError(
                f"{manifest.path_of(role)}: {n_out} boxes but {len(self.anchors)} anchors; "
                "not a MediaPipe BlazeFace model?"
            )
        self._canvas = np.zeros((self.size, self.size, 3), dtype=np.uint8)
        self._layout: tuple[int, int, int, int] | None = None
        self._input = np.zeros((1, self.size, self.size, 3), dtype=np.float32)
        # logit threshold: sigmoid(x) > t  <=>  x > log(t / (1 - t))
        t_ = min(max(cfg.score_threshold, 1e-6), 1 - 1e-6)
        self._logit_threshold = float(np.log(t_ / (1 - t_)))

    def detect(self, frame: np.ndarray, grey: np.ndarray) -> list[Detection]:
        h, w = frame.shape[:2]
        s = self.size / max(h, w)  # letterbox: keep the aspect ratio, pad the short side (MediaPipe FIT)
        rw, rh = max(1, int(round(w * s))), max(1, int(round(h * s)))
        px, py = (self.size - rw) // 2, (self.size - rh) // 2
        if (rw, rh, px, py) != self._layout:  # new frame size: clear the padding once
            self._canvas[:] = 0
            self._layout = (rw, rh, px, py)
        region = self._canvas[py : py + rh, px : px + rw]
        if px == 0:  # landscape: full-width rows are contiguous, resize straight into the canvas
            cv2.resize(frame, (rw, rh), dst=region, interpolation=cv2.INTER_AREA)
        else:
            region[:] = cv2.resize(frame, (rw, rh), interpolation=cv2.INTER_AREA)
        cv2.cvtColor(self._canvas, cv2.COLOR_BGR2RGB, dst=self._canvas)  # padding stays 0
        np.multiply(self._canvas, np.float32(1 / 127.5), out=self._input[0], dtype=np.float32)
        np.subtract(self._input, np.float32(1.0), out=self._input)
        self.interpreter.set_tensor(self._in_index, self._input)
        self.interpreter.invoke()
        raw_scores = self.interpreter.get_tensor(self._scores_index)[0, :, 0]
        keep = np.nonzero(raw_scores > self._logit_threshold)[0]
        if keep.size == 0:
            return []
        raw = self.interpreter.get_tensor(self._boxes_index)[0, keep, :4] / self.size
        scores = 1.0 / (1.0 + np.exp(-np.clip(raw_scores[keep], -_RAW_SCORE_CLIP, _RAW_SCORE_CLIP)))
        cx = raw[:, 0] + self.anchors[keep, 0]
        cy = raw[:, 1] + self.anchors[keep, 1]
        boxes = np.stack([cx - raw[:, 2] / 2, cy - raw[:, 3] / 2, cx + raw[:, 2] / 2, cy + raw[:, 3] / 2], axis=1)
        dets = []
        for box, score in weighted_nms(boxes, scores, self.cfg.nms_threshold):
            x0 = (box[0] * self.size - px) / s
            y0 = (box[1] * self.size - py) / s
            x1 = (box[2] * self.size - px) / s
            y1 = (box[3] * self.size - py) / s
            dets.append(Detection(Box(int(round(x0)), int(round(y0)), int(round(x1 - x0)), int(round(y1 - y0))), score))
        return self._finish(dets, w, h)


# --------------------------------------------------------------------------- YuNet


class YuNetDetector(Detector):
    name = "yunet"

    def __init__(self, cfg: DetectorConfig) -> None:
        super().__init__(cfg)
        if not cfg.yunet_model:
            raise FerError("detector.yunet_model: set the path of a YuNet .onnx model for detector.type: yunet")
        if not Path(cfg.yunet_model).is_file():
            raise FerError(f"detector.yunet_model: {cfg.yunet_model}: no such file")
        if not hasattr(cv2, "FaceDetectorYN"):
            raise FerError("detector.type: yunet needs cv2.FaceDetectorYN (OpenCV >= 4.5.4)")
        try:
            self.net = cv2.FaceDetectorYN.create(
                cfg.yunet_model, "", (320, 240), cfg.score_threshold, cfg.nms_threshold, 5000
            )
        except cv2.error as exc:
            raise FerError(f"detector.yunet_model: {cfg.yunet_model}: OpenCV cannot load it: {exc}") from None
        self._size: tuple[int, int] | None = None

    def detect(self, frame: np.ndarray, grey: np.ndarray) -> list[Detection]:
        h, w = frame.shape[:2]
        s = self._scale(w)
        img = (
            frame
            if s == 1.0
            else cv2.resize(frame, (int(round(w * s)), int(round(h * s))), interpolation=cv2.INTER_AREA)
        )
        size = (img.shape[1], img.shape[0])
        if size != self._size:
            self.net.setInputSize(size)
            self._size = size
        _, faces = self.net.detect(img)
        dets = []
        for f in faces if faces is not None else []:
            x, y, bw, bh = (float(v) / s for v in f[:4])
            dets.append(Detection(Box(int(round(x)), int(round(y)), int(round(bw)), int(round(bh))), float(f[-1])))
        return self._finish(dets, w, h)


def create_detector(cfg: DetectorConfig, manifest: Manifest, tflite_cfg: TFLiteConfig | None = None) -> Detector:
    if cfg.type == "haar":
        return HaarDetector(cfg)
    if cfg.type == "blazeface":
        return BlazeFaceDetector(cfg, manifest, tflite_cfg)
    return YuNetDetector(cfg)
