"""A shipped bundle's weights back in a Keras model: ``fer-host train --init-from BUNDLE``.

Fine-tuning the shipped network (new targets, new augmentation) costs a few epochs instead of a full
run, which matters on a 2-core host. A bundle carries its network only as a frozen graph
(``files.frozen_graph``), so the weights are read back from its constants: the float constants of the
graph, in graph order, are matched to the freshly built model's weights by shape (a flip-averaged graph
holds one copy of the network plus its mirror matrix, which matches nothing). Batch norm's four vectors
share one shape, so their order is found by trying each and keeping the one whose output equals the
bundle's own float TFLite file on random faces; nothing is accepted unless it does (within 1e-4).
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any, Callable

import numpy as np

from agent.contracts.errors import FerError
from agent.contracts.manifest import Manifest, load_manifest

TOLERANCE = 1e-4


def is_bundle(path: str | Path) -> bool:
    return (Path(path) / "manifest.json").is_file()


def graph_constants(manifest: Manifest) -> list[np.ndarray]:
    """Every float constant of more than one element in the bundle's frozen graph, in graph order."""
    import tensorflow as tf
    from tensorflow.python.framework import tensor_util

    if "frozen_graph" not in manifest.files:
        raise FerError(f"{manifest.root}: no files.frozen_graph (model.pb) to take weights from")
    pb = manifest.path_of("frozen_graph")
    graph = tf.compat.v1.GraphDef()
    try:
        graph.ParseFromString(pb.read_bytes())
    except Exception:
        raise FerError(f"{pb}: not a binary TensorFlow GraphDef (files.frozen_graph)") from None
    values = (tensor_util.MakeNdarray(n.attr["value"].tensor) for n in graph.node if n.op == "Const")
    return [v for v in values if v.dtype.kind == "f" and v.size > 1]


def _in_shape_order(consts: list[np.ndarray], shapes: list[tuple[int, ...]], where: str) -> list[np.ndarray]:
    out, it = [], iter(consts)
    for shape in shapes:
        for c in it:
            if c.shape == shape:
                out.append(c)
                break
        else:
            raise FerError(f"{where}: the frozen graph has no weight of shape {list(shape)} where the network built "
                           "with --widths/--convs needs one: the bundle's network has another shape")
    return out


def _reorder_norms(weights: list[np.ndarray], perm: tuple[int, ...]) -> list[np.ndarray]:
    """Apply ``perm`` to each run of four same-shaped vectors (one batch norm's gamma, beta, mean, variance)."""
    out, i = [], 0
    while i < len(weights):
        group = weights[i:i + 4]
        if len(group) == 4 and all(w.ndim == 1 and w.shape == group[0].shape for w in group) and \
                (i == 0 or weights[i - 1].ndim == 4):
            out += [group[p] for p in perm]
            i += 4
        else:
            out.append(weights[i])
            i += 1
    return out


def bundle_weights(bundle: str | Path, build: Callable[[], Any]) -> tuple[list[np.ndarray], Manifest]:
    """The bundle's network as weights for models that ``build()`` makes; and its manifest (its normalisation
    is the one these weights expect). The check runs on a float32 build, whatever the run's dtype policy."""
    import keras

    from host_tools import tflite_eval

    manifest = load_manifest(bundle)
    where = str(Path(bundle) / "manifest.json")
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float32")
    try:
        model = build()
    finally:
        keras.config.set_dtype_policy(previous)
    shapes = [tuple(w.shape) for w in model.get_weights()]
    weights = _in_shape_order(graph_constants(manifest), shapes, where)
    x = np.random.default_rng(0).normal(size=(8, *model.input_shape[1:])).astype(np.float32)
    expected = tflite_eval.predict(manifest.path_of("tflite"), x)
    flip_averaged = len(manifest.to_dict()["model"].get("views", ["face"])) > 1
    best = (np.inf, None)
    for perm in itertools.permutations(range(4)):
        model.set_weights(_reorder_norms(weights, perm))
        got = model.predict(x, verbose=0)
        if flip_averaged:
            got = (got + model.predict(x[:, :, ::-1], verbose=0)) / 2
        diff = float(np.abs(got - expected).max())
        best = min(best, (diff, perm), key=lambda b: b[0])
    if best[0] > TOLERANCE:
        raise FerError(f"{where}: the network rebuilt from the frozen graph differs from the bundle's float TFLite "
                       f"file by {best[0]:.3g}: cannot take its weights")
    return _reorder_norms(weights, best[1]), manifest
