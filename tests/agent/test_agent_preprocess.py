"""The agent's face tensors are byte-identical to the host's preprocessing; raw files are float32 LE NHWC."""

from __future__ import annotations

import struct

import cv2
import numpy as np
import pytest

from agent.capture import ArraySource, SourceConfig
from agent.config import AgentConfig
from agent.contracts.preprocess import image_tensor, square_crop
from agent.contracts.rawtensor import read_raw, write_raw
from agent.detectors.haar import HaarDetector
from agent.pipeline import NullPublisher
from agent.runner import build_pipeline
from agent.synthetic import grid_frame


class RecordingBackend:
    """A classifier that keeps a copy of every batch the pipeline hands to inference."""

    name = "recording"

    def __init__(self, manifest):
        self.manifest = manifest
        self.batches = []

    def infer(self, faces):
        self.batches.append(faces.copy())
        out = np.zeros((len(faces), len(self.manifest.labels)), np.float32)
        out[:, 3] = 1.0
        return out


def independent(crop_bgr: np.ndarray, side: int, mean: float, std: float) -> np.ndarray:
    """(pixel/255 - mean)/std written out with numpy, on OpenCV's grey + area resize of the crop."""
    grey = cv2.cvtColor(crop_bgr, cv2.COLOR_BGR2GRAY)
    small = cv2.resize(grey, (side, side), interpolation=cv2.INTER_AREA).astype(np.float32)
    return ((small / np.float32(255.0) - np.float32(mean)) / np.float32(std))[:, :, None]


@pytest.mark.parametrize("margin", [0.0, 0.15])
def test_agent_path_equals_host_preprocessing_byte_for_byte(manifest, margin):
    cfg = AgentConfig()
    cfg.detector.margin = margin
    frame = grid_frame(4)
    backend = RecordingBackend(manifest)
    det = HaarDetector(cfg.detector)
    seen = []
    detect = det.detect
    det.detect = lambda image, grey: seen.extend(detect(image, grey)) or list(seen)  # record what the pipeline used
    pipeline = build_pipeline(cfg, manifest, ArraySource(SourceConfig(), []), det, backend, NullPublisher())
    pipeline.process(frame, 0.0)
    boxes = seen
    (batch,) = backend.batches
    assert batch.shape == (4, 48, 48, 1) and batch.dtype == np.float32
    spec = manifest.input
    for tensor, det_ in zip(batch, boxes, strict=True):
        x0, y0, x1, y1 = square_crop(det_.box, frame.shape[1], frame.shape[0], margin)
        crop = frame[y0:y1, x0:x1]
        host = image_tensor(crop, spec)
        assert host.tobytes() == tensor.tobytes()
        assert independent(crop, 48, spec.normalization.mean, spec.normalization.std).tobytes() == tensor.tobytes()


def test_raw_tensor_files_are_float32_le_nhwc(manifest, tmp_path):
    frame = grid_frame(1)
    crop = frame[190:310, 260:380]
    tensor = image_tensor(crop, manifest.input)[None]  # [1, 48, 48, 1]
    path = write_raw(tmp_path / "face.raw", tensor)
    data = path.read_bytes()
    assert len(data) == 48 * 48 * 1 * 4
    # element [0, y, x, 0] is at byte offset ((y * 48) + x) * 4, little-endian IEEE float32
    for y, x in [(0, 0), (0, 1), (1, 0), (47, 47), (20, 31)]:
        (value,) = struct.unpack_from("<f", data, (y * 48 + x) * 4)
        assert value == tensor[0, y, x, 0]
    assert np.array_equal(read_raw(path, (1, 48, 48, 1)), tensor)
    assert data == np.ascontiguousarray(tensor).astype("<f4").tobytes()
