"""Distillation targets: the blend of label and teacher that ``fer-host train --teacher`` trains on.

Pure NumPy; the run through a real teacher bundle is in test_host_pipeline.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from host_tools.distill import soft_targets

LABELS = np.array([0, 3, 6, 1])


def _teacher(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).dirichlet(np.ones(7), size=len(LABELS)).astype(np.float32)


def test_targets_are_distributions_between_label_and_teacher():
    teacher = _teacher()
    np.testing.assert_allclose(soft_targets(LABELS, teacher, alpha=0.0), np.eye(7)[LABELS])
    np.testing.assert_allclose(soft_targets(LABELS, teacher, alpha=1.0), teacher, atol=1e-6)
    half = soft_targets(LABELS, teacher, alpha=0.5)
    np.testing.assert_allclose(half, (np.eye(7)[LABELS] + teacher) / 2, atol=1e-6)
    np.testing.assert_allclose(half.sum(1), 1.0, atol=1e-6)
    assert half.dtype == np.float32


def test_temperature_softens_the_teacher_like_dividing_its_logits():
    logits = np.random.default_rng(1).normal(size=(len(LABELS), 7)) * 3
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    expected = np.exp(logits / 2) / np.exp(logits / 2).sum(1, keepdims=True)
    np.testing.assert_allclose(soft_targets(LABELS, probs, alpha=1.0, temperature=2.0), expected, atol=1e-5)

    def entropy(p):
        return -(p * np.log(p)).sum(1)

    assert (entropy(soft_targets(LABELS, probs, 1.0, 3.0)) > entropy(soft_targets(LABELS, probs, 1.0, 1.0))).all()


@pytest.mark.parametrize("alpha, temperature", [(-0.1, 1.0), (1.1, 1.0), (0.5, 0.0)])
def test_out_of_range_settings_are_rejected(alpha, temperature):
    with pytest.raises(ValueError, match="needs 0 <= alpha <= 1 and temperature > 0"):
        soft_targets(LABELS, _teacher(), alpha, temperature)
