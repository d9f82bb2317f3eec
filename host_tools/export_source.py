"""Where ``fer-host export`` takes the network from: a training run, or an existing bundle.

Either way the export gets a :class:`Source` (the network as a TensorFlow
callable, the normalisation, the training summary, the files to carry over)
and runs one export path (:func:`host_tools.export.export_bundle`).

- A training run (``fer-host export RUN``): ``best.keras`` loaded in float32
  (:func:`host_tools.model.load_float32`) and the run's ``metrics.json``.
- A bundle (``fer-host export --from-bundle BUNDLE``): its frozen graph
  (``files.frozen_graph``, model.pb), wrapped as a TensorFlow function and
  pruned from ``input_node`` to ``output_node``, its weights lifted back into
  variables, so the re-export computes what the bundle computes with the same
  constants, whatever the architecture;
  normalisation from its manifest, the training summary from its
  ``training_metrics.json``. This re-exports shipped weights with other export
  options (``--flip-average``, another ``--version``) without retraining.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from agent.contracts.errors import FerError
from agent.contracts.labels import NUM_CLASSES
from agent.contracts.manifest import Normalization, load_manifest
from host_tools.model import load_float32

SIDE = 48
INPUT_SHAPE = [1, SIDE, SIDE, 1]
MIRRORED = "mirrored face"
#: name in the exported bundle -> name in a training run directory
RUN_COPIES = {"training_curves.png": "training_curves.png", "confusion_matrix.png": "confusion_matrix.png",
              "training_metrics.json": "metrics.json", "training_log.csv": "log.csv"}


@dataclass
class Source:
    """The network to export and what the bundle records about it."""

    network: Callable[[Any], Any]  # TF: float32 [1, 48, 48, 1] normalised faces -> [1, 7] probabilities
    trackable: Any  # owns the network's state, for the TFLite converter and tf.saved_model.save
    norm: Normalization
    summary: dict[str, Any]  # train_seconds, machine, config.data
    copies: dict[str, Path]  # file name in the new bundle -> file copied there (training plots, log, metrics)
    views: tuple[str, ...] = ("face",)  # what one call of ``network`` computes already
    origin: dict[str, Any] = field(default_factory=dict)  # manifest model.source (re-exports)


def load_run(run_dir: Path) -> tuple[Path, dict[str, Any]]:
    """Best checkpoint and training summary of a ``fer-host train`` output directory."""
    ckpt = run_dir / "best.keras"
    if not ckpt.exists():
        raise FerError(f"{run_dir}: no best.keras checkpoint (is this a `fer-host train` output directory?)")
    for name in ("metrics.json", "state.json"):
        if (run_dir / name).exists():
            return ckpt, json.loads((run_dir / name).read_text())
    raise FerError(f"{run_dir}: no metrics.json or state.json (normalisation unknown)")


def from_run(run_dir: Path) -> Source:
    ckpt, summary = load_run(run_dir)
    model = load_float32(ckpt)
    norm = Normalization(**{k: summary["normalization"][k] for k in ("mean", "std")})
    copies = {dst: run_dir / src for dst, src in RUN_COPIES.items() if (run_dir / src).exists()}
    return Source(lambda x: model(x, training=False), model, norm, summary, copies)


def from_bundle(tf, bundle: Path) -> Source:
    """The bundle's frozen graph as the network; errors name the file and manifest key."""
    manifest = load_manifest(bundle, verify=False)
    where = f"{Path(bundle) / 'manifest.json'}"
    if "frozen_graph" not in manifest.files:
        raise FerError(f"{where}: no files.frozen_graph (model.pb) to re-export from: the bundle must carry "
                       "the frozen graph `fer-host export` writes")
    pb = manifest.path_of("frozen_graph")
    if not pb.exists():
        raise FerError(f"{pb}: not found (files.frozen_graph in {where})")
    manifest.verify(["frozen_graph"])
    extra = manifest.files["frozen_graph"].extra
    in_node = str(extra.get("input_node") or manifest.input.name)
    out_node = str(extra.get("output_node") or manifest.output.name)
    if manifest.output.kind != "probabilities":
        raise FerError(f"{where}: output.kind is {manifest.output.kind!r}; re-export needs 'probabilities'")
    graph_def = tf.compat.v1.GraphDef()
    try:
        graph_def.ParseFromString(pb.read_bytes())
    except Exception:
        raise FerError(f"{pb}: not a binary TensorFlow GraphDef (files.frozen_graph)") from None
    network, holder = _wrap(tf, graph_def, pb, in_node, out_node)
    views = tuple(manifest.to_dict()["model"].get("views", ["face"]))
    summary = _bundle_summary(Path(bundle), manifest.metrics)
    copies = {name: Path(bundle) / name for name in RUN_COPIES if (Path(bundle) / name).exists()}
    origin = {"bundle": f"{manifest.model_name} {manifest.model_version}", "frozen_graph_sha256":
              manifest.files["frozen_graph"].sha256, "views": list(views)}
    return Source(network, holder, manifest.input.normalization, summary, copies, views, origin)


def _wrap(tf, graph_def, pb: Path, in_node: str, out_node: str):
    """GraphDef -> a function from ``in_node:0`` to ``out_node:0`` of the graph's weights, and their owner.

    Every float constant that is not a scalar becomes a variable again, so a graph that calls the network twice
    (``--flip-average``) freezes to one copy of the weights, as the export of a Keras model does.
    """
    from tensorflow.python.framework import tensor_util

    nodes = {n.name: n for n in graph_def.node}
    for key, node in (("input_node", in_node), ("output_node", out_node)):
        if node not in nodes:
            raise FerError(f"{pb}: files.frozen_graph.{key} {node!r} is not a node of the graph")
    placeholder = nodes[in_node]
    dims = [d.size for d in placeholder.attr["shape"].shape.dim]
    if placeholder.op != "Placeholder" or len(dims) != 4 or dims[1:] != INPUT_SHAPE[1:] or dims[0] not in (1, -1):
        raise FerError(f"{pb}: files.frozen_graph.input_node {in_node!r} is a {placeholder.op} of shape {dims}, "
                       f"expected a Placeholder of shape {INPUT_SHAPE} (input.shape)")
    consts = {n.name: tensor_util.MakeNdarray(n.attr["value"].tensor) for n in graph_def.node if n.op == "Const"}
    weights = {name: tf.Variable(value, trainable=False) for name, value in consts.items()
               if value.dtype.kind == "f" and value.size > 1}  # shapes and axes stay constants

    def body():
        tf.compat.v1.import_graph_def(graph_def, input_map={f"{k}:0": v.read_value() for k, v in weights.items()},
                                      name="")
    try:
        fn = tf.compat.v1.wrap_function(body, [])
        net = fn.prune(fn.graph.get_tensor_by_name(f"{in_node}:0"), fn.graph.get_tensor_by_name(f"{out_node}:0"))
    except Exception as exc:
        raise FerError(f"{pb}: cannot import the frozen graph (files.frozen_graph): {' '.join(str(exc).split())}") \
            from None
    shape = net.outputs[0].shape.as_list()
    if len(shape) != 2 or shape[0] not in (1, None) or shape[1] != NUM_CLASSES:
        raise FerError(f"{pb}: files.frozen_graph.output_node {out_node!r} has shape {shape}, "
                       f"expected [1, {NUM_CLASSES}] (output.shape)")
    holder = tf.Module()
    holder.weights = list(weights.values())
    return net, holder


def _bundle_summary(bundle: Path, metrics: dict[str, Any]) -> dict[str, Any]:
    """The training summary a bundle carries: training_metrics.json, else what its manifest metrics kept."""
    path = bundle / "training_metrics.json"
    summary = json.loads(path.read_text()) if path.exists() else {}
    summary.setdefault("train_seconds", metrics.get("train_seconds"))
    summary.setdefault("machine", metrics.get("train_machine"))
    return summary
