"""Batch augmentation in TensorFlow ops (runs inside tf.data, on CPU).

One projective transform per image combines flip, rotation, scale and shift
with reflect fill - the shift is the same as a random crop from a
reflect-padded image, done without materialising the padding. Random erasing
follows (Zhong et al., 2017), then optional mixup (Zhang et al., 2018), which
blends pairs of faces and their one-hot labels. Everything is vectorised over
the batch: on a 2-core machine per-image Python or map() calls would cost more
than the model.
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


def augment_batch(images: tf.Tensor, cfg: AugmentConfig) -> tf.Tensor:
    """``images``: float32 [B, H, W, 1] (already normalised). Returns the same shape."""
    import tensorflow as tf

    b = tf.shape(images)[0]
    h = tf.cast(tf.shape(images)[1], tf.float32)
    w = tf.cast(tf.shape(images)[2], tf.float32)
    angle = tf.random.uniform([b], -1.0, 1.0) * (cfg.rotation_deg * math.pi / 180.0)
    scale = 1.0 + tf.random.uniform([b], -cfg.scale, cfg.scale)
    tx = tf.random.uniform([b], -cfg.shift_px, cfg.shift_px)
    ty = tf.random.uniform([b], -cfg.shift_px, cfg.shift_px)
    flip = tf.cast(tf.random.uniform([b]) < 0.5, tf.float32) * 2.0 - 1.0 if cfg.flip else tf.ones([b])
    # Output pixel (x, y) samples input at A @ (x - c) + c + t, where A = R(angle)/scale with a flip of x.
    cx, cy = (w - 1.0) / 2.0, (h - 1.0) / 2.0
    cos, sin = tf.cos(angle) / scale, tf.sin(angle) / scale
    a0, a1 = cos * flip, -sin
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
