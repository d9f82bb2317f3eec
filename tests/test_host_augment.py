"""Augmentation keeps shapes, dtype and labels, and each transform does what it says."""

from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow", reason="host tests need the `host` extra (TensorFlow)")

from host_tools.augment import AugmentConfig, augment_batch  # noqa: E402

NONE = AugmentConfig(flip=False, rotation_deg=0, scale=0, shift_px=0, erase_prob=0)


def _batch(n=16):
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, 48, 48, 1)).astype(np.float32)


def test_shapes_dtype_and_labels_preserved():
    x = _batch()
    y = np.arange(16) % 7
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(8).map(lambda a, b: (augment_batch(a, AugmentConfig()), b))
    xs, ys = zip(*[(a.numpy(), b.numpy()) for a, b in ds])
    out = np.concatenate(xs)
    assert out.shape == x.shape and out.dtype == np.float32
    np.testing.assert_array_equal(np.concatenate(ys), y)
    assert not np.allclose(out, x)  # it did change the images


def test_identity_when_everything_is_off():
    x = _batch()
    np.testing.assert_allclose(augment_batch(tf.constant(x), NONE).numpy(), x, atol=1e-5)


def test_flip_only_mirrors():
    x = _batch(64)
    out = augment_batch(tf.constant(x), AugmentConfig(flip=True, rotation_deg=0, scale=0, shift_px=0, erase_prob=0)).numpy()
    mirrored = np.array([np.allclose(o, i[:, ::-1], atol=1e-5) for o, i in zip(out, x)])
    same = np.array([np.allclose(o, i, atol=1e-5) for o, i in zip(out, x)])
    assert np.all(mirrored | same) and 10 < mirrored.sum() < 54


def test_erasing_zeroes_one_rectangle():
    x = np.ones((32, 48, 48, 1), np.float32)
    cfg = AugmentConfig(flip=False, rotation_deg=0, scale=0, shift_px=0, erase_prob=1.0)
    out = augment_batch(tf.constant(x), cfg).numpy()[..., 0]
    for img in out:
        zeros = np.argwhere(img == 0)
        assert len(zeros) > 0
        (r0, c0), (r1, c1) = zeros.min(0), zeros.max(0)
        assert (img[r0:r1 + 1, c0:c1 + 1] == 0).all()  # a solid rectangle
        assert 0.01 * 48 * 48 <= len(zeros) <= 0.25 * 48 * 48
