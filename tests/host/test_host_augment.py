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
    xs, ys = zip(*[(a.numpy(), b.numpy()) for a, b in ds], strict=False)
    out = np.concatenate(xs)
    assert out.shape == x.shape and out.dtype == np.float32
    np.testing.assert_array_equal(np.concatenate(ys), y)
    assert not np.allclose(out, x)  # it did change the images


def test_identity_when_everything_is_off():
    x = _batch()
    np.testing.assert_allclose(augment_batch(tf.constant(x), NONE).numpy(), x, atol=1e-5)


def test_flip_only_mirrors():
    x = _batch(64)
    out = augment_batch(
        tf.constant(x), AugmentConfig(flip=True, rotation_deg=0, scale=0, shift_px=0, erase_prob=0)
    ).numpy()
    mirrored = np.array([np.allclose(o, i[:, ::-1], atol=1e-5) for o, i in zip(out, x, strict=False)])
    same = np.array([np.allclose(o, i, atol=1e-5) for o, i in zip(out, x, strict=False)])
    assert np.all(mirrored | same) and 10 < mirrored.sum() < 54


def test_erasing_zeroes_one_rectangle():
    x = np.ones((32, 48, 48, 1), np.float32)
    cfg = AugmentConfig(flip=False, rotation_deg=0, scale=0, shift_px=0, erase_prob=1.0)
    out = augment_batch(tf.constant(x), cfg).numpy()[..., 0]
    for img in out:
        zeros = np.argwhere(img == 0)
        assert len(zeros) > 0
        (r0, c0), (r1, c1) = zeros.min(0), zeros.max(0)
        assert (img[r0 : r1 + 1, c0 : c1 + 1] == 0).all()  # a solid rectangle
        assert 0.01 * 48 * 48 <= len(zeros) <= 0.25 * 48 * 48


def test_mixup_blends_faces_and_labels_with_the_same_weight():
    from host_tools.augment import mixup

    tf.random.set_seed(3)
    n = 64
    x = np.stack([np.full((48, 48, 1), i, np.float32) for i in range(n)])  # face i is the constant i
    y = np.eye(7, dtype=np.float32)[np.arange(n) % 7]
    mx, my = (t.numpy() for t in mixup(tf.constant(x), tf.constant(y), AugmentConfig(mixup_alpha=1.0)))
    assert mx.shape == x.shape and my.shape == y.shape
    np.testing.assert_allclose(my.sum(1), 1.0, atol=1e-6)
    partner = np.arange(n)[::-1]
    lam = (mx[:, 0, 0, 0] - partner) / (np.arange(n) - partner)  # pixel = lam*i + (1-lam)*partner
    np.testing.assert_allclose(my, lam[:, None] * y + (1 - lam[:, None]) * y[partner], atol=1e-5)
    assert ((lam >= 0) & (lam <= 1)).all() and 0.2 < lam.mean() < 0.8  # Beta(1, 1) is uniform


def test_mixup_off_or_never_chosen_leaves_the_batch_alone():
    from host_tools.augment import mixup

    x, y = tf.constant(_batch()), tf.one_hot(np.arange(16) % 7, 7)
    for cfg in (AugmentConfig(), AugmentConfig(mixup_alpha=0.4, mixup_prob=0.0)):
        mx, my = mixup(x, y, cfg)
        np.testing.assert_array_equal(mx.numpy(), x.numpy())
        np.testing.assert_array_equal(my.numpy(), y.numpy())


def test_camera_changes_pixels_within_range_and_only_when_on():
    from host_tools.augment import camera_batch

    rng = np.random.default_rng(2)
    pixels = tf.constant(rng.uniform(0, 1, size=(64, 48, 48, 1)).astype(np.float32))
    off = camera_batch(pixels, AugmentConfig(camera_prob=0.0)).numpy()
    np.testing.assert_array_equal(off, pixels.numpy())
    on = camera_batch(pixels, AugmentConfig(camera_prob=1.0)).numpy()
    assert on.shape == pixels.shape and on.min() >= 0.0 and on.max() <= 1.0
    changed = np.abs(on - pixels.numpy()).reshape(64, -1).max(axis=1) > 1e-3
    assert changed.all()
    # Equalised faces span the full range; the camera's contrast and gamma move that (mean spread drops).
    assert on.std(axis=(1, 2, 3)).mean() < pixels.numpy().std(axis=(1, 2, 3)).mean()


def test_camera_in_augment_batch_keeps_normalised_images_normalised():
    x = tf.constant(((np.random.default_rng(3).uniform(0, 1, (32, 48, 48, 1)) - 0.5) / 0.3).astype(np.float32))
    out = augment_batch(x, AugmentConfig(flip=False, rotation_deg=0, scale=0, shift_px=0, erase_prob=0,
                                         camera_prob=1.0), (0.5, 0.3)).numpy()
    assert out.min() >= (0 - 0.5) / 0.3 - 1e-4 and out.max() <= (1 - 0.5) / 0.3 + 1e-4
    assert not np.allclose(out, x.numpy())


def test_aspect_jitter_stretches_one_axis():
    bar = np.zeros((8, 48, 48, 1), np.float32)
    bar[:, 20:28, 20:28] = 1.0  # a square
    cfg = AugmentConfig(flip=False, rotation_deg=0, scale=0, shift_px=0, erase_prob=0, aspect=0.3)
    out = augment_batch(tf.constant(bar), cfg).numpy()[..., 0] > 0.5
    widths, heights = out.any(axis=1).sum(axis=1), out.any(axis=2).sum(axis=1)
    assert (heights == 8).all() and (widths != 8).any()
