"""YuNet detector: OpenCV's ``FaceDetectorYN`` on a model file the user provides."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import cv2
import numpy as np

from agent.contracts.errors import FerError
from agent.contracts.manifest import Manifest
from agent.contracts.preprocess import Box
from agent.detectors import Detection, Detector, DetectorConfig
from agent.runtimes import BackendConfig


@dataclass
class YuNetConfig:
    model: Optional[str] = field(default=None, metadata={"doc": "path to a YuNet .onnx model"})


class YuNetDetector(Detector):
    name = "yunet"
    summary = "cv2.FaceDetectorYN, needs detector.yunet.model"
    config_class = YuNetConfig

    def __init__(self, cfg: DetectorConfig, manifest: Manifest | None = None, backend: BackendConfig | None = None,
                 state_dir: Path | None = None) -> None:
        super().__init__(cfg, manifest, backend, state_dir)
        model = self.options.model
        if not model:
            raise FerError("detector.yunet.model: set the path of a YuNet .onnx model for detector.type: yunet")
        if not Path(model).is_file():
            raise FerError(f"detector.yunet.model: {model}: no such file")
        if not hasattr(cv2, "FaceDetectorYN"):
            raise FerError("detector.type: yunet needs cv2.FaceDetectorYN (OpenCV >= 4.5.4)")
        try:
            self.net = cv2.FaceDetectorYN.create(
                model, "", (320, 240), cfg.score_threshold, cfg.nms_threshold, 5000
            )
        except cv2.error as exc:
            raise FerError(f"detector.yunet.model: {model}: OpenCV cannot load it: {exc}") from None
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
