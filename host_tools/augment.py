"""Batch augmentation in TensorFlow ops (runs inside tf.data, on CPU).

One projective transform per image combines flip, rotation, scale and shift
with reflect fill - the shift is the same as a random crop from a
reflect-padded image, done without materialising the padding. Random erasing
follows (Zhong et al., 2017), then optional mixup (Zhang et al., 2018), which
blends pairs of faces and their one-hot labels. Everything is vectorised over
the batch: on a 2-core machine per-image Python or map() calls would cost more
than the model.

Camera augmentation (``--camera``, :func:`camera_batch`) adds what a camera does to a face and FER2013
lacks. Our FER2013 file is histogram-equalised per image (every face spans 0-255 with a flat histogram);
a camera crop is not, so the network must stop relying on it: lower or higher contrast, gamma, brightness,
a side-light gradient, resolution loss (blur), sensor noise and JPEG re-compression, each drawn per face,
applied to a share of the faces so equalised ones are still seen. Geometry gets aspect jitter on top of
the shared flip/rotation/scale/shift (a detector's box is not always square on the face).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import tensorflow as tf


@dataclass(frozen=True)
class AugmentConfig:
    flip: bool = True
    rotation_deg: float = 10.0
    scale: float = 0.1  # zoom in/out by up to this fraction
    shift_px: float = 4.0  # equivalent to a random crop with this much reflect padding
    erase_prob: float = 0.5
    erase_area: tuple[float, float] = (0.02, 0.2)
    erase_aspect: tuple[float, float] = (0.3, 3.3)
    mixup_alpha: float = 0.0  # Beta(alpha, alpha) blend weight; 0 = off
    mixup_prob: float = 1.0  # share of faces that get blended with a partner
    aspect: float = 0.0  # stretch x against y by up to this fraction (crop aspect jitter)
    camera_prob: float = 0.0  # share of faces that get the camera's photometric changes (0 = off)
    contrast: float = 0.4  # contrast factor drawn from [1 - contrast, 1 + contrast / 2] around the face's mean
    gamma: float = 0.4  # gamma = exp(U(-gamma, gamma))
    brightness: float = 0.15  # shift by U(-b, b) of full scale
    gradient: float = 0.25  # side-light ramp of up to this amplitude across the face
    blur_prob: float = 0.2  # share of camera faces shrunk to 20-36 px and enlarged again
    noise: float = 0.03  # sensor noise, sigma up to this (full scale 1)
    jpeg_prob: float = 0.3  # share of camera faces re-compressed as JPEG at quality 25-90


#: ``--camera``: the camera augmentation this project trains with (module docstring).
CAMERA_PRESET = {"camera_prob": 0.5, "aspect": 0.1}


def augment_batch(images: tf.Tensor, cfg: AugmentConfig, norm: tuple[float, float] = (0.0, 1.0)) -> tf.Tensor:
    """``images``: float32 [B, H, W, 1] (already normalised with ``norm`` = (mean, std)). Returns the same shape."""
    import tensorflow as tf

    if cfg.camera_prob > 0:
        mean, std = norm
        images = (camera_batch(images * std + mean, cfg) - mean) / std

    b = tf.shape(images)[0]
    h = tf.cast(tf.shape(images)[1], tf.float32)
    w = tf.cast(tf.shape(images)[2], tf.float32)
    angle = tf.random.uniform([b], -1.0, 1.0) * (cfg.rotation_deg * math.pi / 180.0)
    scale = 1.0 + tf.random.uniform([b], -cfg.scale, cfg.scale)
    aspect = 1.0 + tf.random.uniform([b], -cfg.aspect, cfg.aspect)
    tx = tf.random.uniform([b], -cfg.shift_px, cfg.shift_px)
    ty = tf.random.uniform([b], -cfg.shift_px, cfg.shift_px)
    flip = tf.cast(tf.random.uniform([b]) < 0.5, tf.float32) * 2.0 - 1.0 if cfg.flip else tf.ones([b])
    # Output pixel (x, y) samples input at A @ (x - c) + c + t, where A = R(angle)/scale with a flip of x.
    cx, cy = (w - 1.0) / 2.0, (h - 1.0) / 2.0
    cos, sin = tf.cos(angle) / scale, tf.sin(angle) / scale
    a0, a1 = cos * flip * aspect, -sin * aspect
    b0, b1 = sin * flip, cos
    a2 = cx - a0 * cx - a1 * cy + tx
    b2 = cy - b0 * cx - b1 * cy + ty
    zeros = tf.zeros([b])
    transforms = tf.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=1)
    out = tf.raw_ops.ImageProjectiveTransformV3(
        images=images, transforms=transforms, output_shape=tf.shape(images)[1:3],
        fill_value=0.0, interpolation="BILINEAR", fill_mode="REFLECT",
    )
    if cfg.erase_prob > 0:
        out = random_erase(out, cfg)
    return out


def random_erase(images: tf.Tensor, cfg: AugmentConfig) -> tf.Tensor:
    """Zero (= the dataset mean after normalisation) one random rectangle per chosen image."""
    import tensorflow as tf

    b = tf.shape(images)[0]
    h = tf.cast(tf.shape(images)[1], tf.float32)
    w = tf.cast(tf.shape(images)[2], tf.float32)
    area = tf.random.uniform([b], *cfg.erase_area) * h * w
    log_r = tf.random.uniform([b], math.log(cfg.erase_aspect[0]), math.log(cfg.erase_aspect[1]))
    ratio = tf.exp(log_r)
    eh = tf.minimum(tf.sqrt(area * ratio), h)
    ew = tf.minimum(tf.sqrt(area / ratio), w)
    y0 = tf.random.uniform([b]) * (h - eh)
    x0 = tf.random.uniform([b]) * (w - ew)
    ys = tf.range(h)[None, :, None]
    xs = tf.range(w)[None, None, :]
    inside = (
        (ys >= y0[:, None, None]) & (ys < (y0 + eh)[:, None, None])
        & (xs >= x0[:, None, None]) & (xs < (x0 + ew)[:, None, None])
    )
    chosen = (tf.random.uniform([b]) < cfg.erase_prob)[:, None, None]
    mask = tf.cast(inside & chosen, images.dtype)[..., None]
    return images * (1.0 - mask)


def mixup(images: tf.Tensor, labels: tf.Tensor, cfg: AugmentConfig) -> tuple[tf.Tensor, tf.Tensor]:
    """Blend each chosen face and its one-hot label with its partner in the reversed (shuffled) batch.

    The weight is per face, drawn from Beta(alpha, alpha) as the ratio of two gamma draws, so the
    pipeline stays vectorised; faces not chosen keep weight 1 and stay as they were.
    """
    import tensorflow as tf

    if cfg.mixup_alpha <= 0:
        return images, labels
    b = tf.shape(images)[0]
    g1 = tf.random.gamma([b], cfg.mixup_alpha)
    g2 = tf.random.gamma([b], cfg.mixup_alpha)
    lam = g1 / tf.maximum(g1 + g2, 1e-12)
    lam = tf.where(tf.random.uniform([b]) < cfg.mixup_prob, lam, tf.ones([b]))
    labels = tf.cast(labels, images.dtype)
    mixed_x = lam[:, None, None, None] * images + (1.0 - lam[:, None, None, None]) * tf.reverse(images, [0])
    mixed_y = lam[:, None] * labels + (1.0 - lam[:, None]) * tf.reverse(labels, [0])
    return mixed_x, mixed_y


def camera_batch(pixels: tf.Tensor, cfg: AugmentConfig) -> tf.Tensor:
    """``pixels``: float32 [B, H, W, 1] in 0..1 -> the same faces as a camera might have taken them.

    Each change is drawn per face; faces not chosen (``1 - camera_prob``) pass through unchanged.
    """
    import tensorflow as tf

    b = tf.shape(pixels)[0]
    h, w = tf.shape(pixels)[1], tf.shape(pixels)[2]

    def per_face(lo, hi):
        return tf.random.uniform([b, 1, 1, 1], lo, hi)

    x = pixels
    mean = tf.reduce_mean(x, axis=[1, 2, 3], keepdims=True)
    x = mean + (x - mean) * per_face(1.0 - cfg.contrast, 1.0 + cfg.contrast / 2)
    x = tf.clip_by_value(x + per_face(-cfg.brightness, cfg.brightness), 0.0, 1.0)
    x = tf.pow(x + 1e-6, tf.exp(per_face(-cfg.gamma, cfg.gamma)))
    # A linear ramp in a random direction: light from one side.
    angle = per_face(0.0, 2.0 * math.pi)
    ys = tf.linspace(-0.5, 0.5, h)[None, :, None, None]
    xs = tf.linspace(-0.5, 0.5, w)[None, None, :, None]
    x = x + per_face(-cfg.gradient, cfg.gradient) * (tf.cos(angle) * xs + tf.sin(angle) * ys)
    x = tf.clip_by_value(x, 0.0, 1.0)
    if cfg.blur_prob > 0:  # resolution loss: one size per batch, applied to a random share of its faces
        side = tf.random.uniform([], 20, 37, dtype=tf.int32)
        small = tf.image.resize(tf.image.resize(x, [side, side], method="area"), [h, w], method="bilinear")
        x = tf.where(per_face(0.0, 1.0) < cfg.blur_prob, small, x)
    x = x + tf.random.normal(tf.shape(x)) * per_face(0.0, cfg.noise)
    x = tf.clip_by_value(x, 0.0, 1.0)
    if cfg.jpeg_prob > 0:
        quality = tf.random.uniform([b], 25, 91, dtype=tf.int32)
        jpeg = tf.map_fn(
            lambda a: tf.image.adjust_jpeg_quality(a[0], a[1]),
            (x, quality),
            fn_output_signature=tf.TensorSpec([None, None, 1], tf.float32),
        )
        x = tf.where(per_face(0.0, 1.0) < cfg.jpeg_prob, tf.reshape(jpeg, tf.shape(x)), x)
    return tf.where(per_face(0.0, 1.0) < cfg.camera_prob, x, pixels)
