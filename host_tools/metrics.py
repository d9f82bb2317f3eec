"""Classification metrics shared by training and evaluation (numpy only)."""

from __future__ import annotations

from typing import Any

import numpy as np

from agent.contracts.labels import LABELS, NUM_CLASSES


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """Counts, rows = true class, columns = predicted class."""
    return np.bincount(y_true * NUM_CLASSES + y_pred, minlength=NUM_CLASSES**2).reshape(NUM_CLASSES, NUM_CLASSES)


def report(y_true: np.ndarray, probs: np.ndarray) -> dict[str, Any]:
    """Accuracy, per-class precision/recall/F1/support, macro F1 and the confusion matrix."""
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(probs).argmax(axis=1)
    cm = confusion_matrix(y_true, y_pred)
    per_class = {}
    for i, name in enumerate(LABELS):
        tp = int(cm[i, i])
        pred = int(cm[:, i].sum())
        support = int(cm[i].sum())
        precision = tp / pred if pred else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[name] = {
            "precision": round(precision, 4),
            "recall": round(recall, 4),
            "f1": round(f1, 4),
            "support": support,
        }
    return {
        "n": int(len(y_true)),
        "accuracy": round(float((y_pred == y_true).mean()), 4) if len(y_true) else 0.0,
        "macro_f1": round(float(np.mean([c["f1"] for c in per_class.values()])), 4),
        "per_class": per_class,
        "confusion_matrix": cm.tolist(),
    }


def format_table(rep: dict[str, Any], title: str = "") -> str:
    lines = [title] if title else []
    lines.append(f"accuracy {rep['accuracy'] * 100:.2f}%  macro-F1 {rep['macro_f1']:.3f}  (n={rep['n']})")
    lines.append(f"{'class':<10}{'precision':>10}{'recall':>8}{'F1':>7}{'support':>9}")
    for name, c in rep["per_class"].items():
        lines.append(f"{name:<10}{c['precision']:>10.3f}{c['recall']:>8.3f}{c['f1']:>7.3f}{c['support']:>9d}")
    return "\n".join(lines)
