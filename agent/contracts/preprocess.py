"""Face preprocessing, exactly as in training: the shared contract.

Both the agent (on camera frames) and the host tools (on image files and
FER2013 rows) call these functions, so a face reaches the model with the same
bytes on both sides. The hot path writes into caller-provided buffers so a
steady-state frame allocates nothing here.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from agent.contracts.manifest import InputSpec, Normalization

#: Image files every component reads (capture folders, make-raw, FER2013 image folders); OpenCV decodes them all.
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".pgm", ".ppm"})

_INTERPOLATION = {"area": cv2.INTER_AREA, "linear": cv2.INTER_LINEAR, "nearest": cv2.INTER_NEAREST}


@dataclass(frozen=True)
class Box:
    """A face box in pixel coordinates of the frame it came from."""

    x: int
    y: int
    w: int
    h: int


def square_crop(box: Box, frame_w: int, frame_h: int, margin: float = 0.0) -> tuple[int, int, int, int]:
    """Square around the box centre, grown by ``margin`` of its side, clipped to the frame.

    Returns ``(x0, y0, x1, y1)``. Clipping keeps it inside the frame, so a face at
    the edge gives a slightly non-square crop; resizing then stretches it a
    little, which is what training on FER2013's pre-cropped faces tolerates best.
    """
    side = max(box.w, box.h) * (1.0 + 2.0 * margin)
    cx = box.x + box.w / 2.0
    cy = box.y + box.h / 2.0
    x0 = int(round(cx - side / 2.0))
    y0 = int(round(cy - side / 2.0))
    x1 = int(round(cx + side / 2.0))
    y1 = int(round(cy + side / 2.0))
    x0, y0 = max(0, x0), max(0, y0)
    x1, y1 = min(frame_w, x1), min(frame_h, y1)
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"face box {box} lies outside the {frame_w}x{frame_h} frame")
    return x0, y0, x1, y1


def to_grey(image: np.ndarray) -> np.ndarray:
    """BGR/BGRA/grey uint8 image -> 2-D grey uint8 (OpenCV's BT.601 weights)."""
    if image.ndim == 2:
        return image
    if image.ndim == 3 and image.shape[2] == 1:
        return image[:, :, 0]
    if image.ndim == 3 and image.shape[2] == 3:
        return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    if image.ndim == 3 and image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2GRAY)
    raise ValueError(f"unsupported image shape {image.shape}")


def resize_grey(grey: np.ndarray, spec: InputSpec, out: np.ndarray | None = None) -> np.ndarray:
    """Resize a grey uint8 image to the model's HxW (no-op copy if already that size)."""
    size = (spec.width, spec.height)
    if grey.shape[:2] == (spec.height, spec.width):
        if out is None:
            return grey.copy()
        np.copyto(out, grey)
        return out
    return cv2.resize(grey, size, dst=out, interpolation=_INTERPOLATION.get(spec.resize, cv2.INTER_AREA))


def normalize(grey: np.ndarray, norm: Normalization, out: np.ndarray | None = None) -> np.ndarray:
    """``x = (pixel/255 - mean) / std`` as float32, computed in that order on both sides.

    Works on any shape of uint8 pixels; ``out`` (float32, same shape) avoids allocation.
    """
    if out is None:
        out = np.empty(grey.shape, dtype=np.float32)
    np.divide(grey, np.float32(255.0), out=out, dtype=np.float32)
    np.subtract(out, np.float32(norm.mean), out=out)
    np.divide(out, np.float32(norm.std), out=out)
    return out


def face_tensor(
    frame: np.ndarray,
    box: Box,
    spec: InputSpec,
    margin: float = 0.0,
    out: np.ndarray | None = None,
    grey_frame: np.ndarray | None = None,
) -> np.ndarray:
    """Crop, grey, resize and normalise one face into an ``(H, W, 1)`` float32 tensor.

    ``grey_frame`` lets the caller convert the whole frame once for all faces
    (the detector usually needs it anyway).
    """
    h, w = frame.shape[:2]
    x0, y0, x1, y1 = square_crop(box, w, h, margin)
    grey = grey_frame if grey_frame is not None else to_grey(frame)
    face = resize_grey(np.ascontiguousarray(grey[y0:y1, x0:x1]), spec)
    if out is None:
        out = np.empty((spec.height, spec.width, 1), dtype=np.float32)
    normalize(face, spec.normalization, out=out[:, :, 0])
    return out


def image_tensor(image: np.ndarray, spec: InputSpec) -> np.ndarray:
    """A whole image taken as one face (FER2013 images are already face crops)."""
    grey = resize_grey(to_grey(image), spec)
    return normalize(grey, spec.normalization)[:, :, None]
