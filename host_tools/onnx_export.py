"""ONNX files for the QNN HTP runtime: float32 ONNX and a QDQ model calibrated for the HTP.

- The classifier comes from the bundle's frozen graph (tf2onnx), so anything
  the graph computes (``export --flip-average``'s mirror view) is inside the
  ONNX model too. Input and output keep the graph's plain names (``input``,
  ``probabilities``) and its NHWC layout.
- The QDQ model is quantised with ONNX Runtime's QNN recipe
  (``get_qnn_qdq_config``: uint8 activations and weights) on Training faces
  balanced across classes through the agent's own preprocessing, the same
  faces the int8 TFLite file is calibrated on.
- BlazeFace short-range comes from its TFLite file (tf2onnx ``from_tflite``)
  and is calibrated on frames made from scikit-image's astronaut photo, fed
  like the agent's detector feeds it (letterbox to 128, RGB, x/127.5 - 1).

``fer-host onnx BUNDLE --data CSV`` adds these files to an existing bundle;
``fer-host export`` writes them as part of the bundle.
"""

from __future__ import annotations

import argparse
import logging
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from agent.contracts.errors import FerError
from agent.contracts.labels import LABELS
from agent.contracts.manifest import FileEntry, Manifest, file_entry, load_manifest

OPSET = 17
ONNX_FILES = {"onnx": "model.onnx", "onnx_qdq": "model_qdq.onnx"}
BLAZEFACE_SHORT = "blazeface_short"
ONNX_DOMAINS = {"", "ai.onnx", "ai.onnx.ml", "com.microsoft"}
QDQ_RECIPE = {
    "quantizer": "onnxruntime.quantization get_qnn_qdq_config",
    "activations": "uint8",
    "weights": "uint8",
    "calibration_method": "MinMax",
}


def _tf2onnx():
    try:
        import onnx  # noqa: F401
        import tf2onnx
    except ImportError as exc:
        raise FerError(
            f"ONNX export needs tf2onnx and onnx ({exc.name} is not installed): pip install 'fer-agent[host]'"
        ) from None
    logging.getLogger("tf2onnx").setLevel(logging.ERROR)
    return tf2onnx


def _check(model: Any, source: str) -> None:
    """tf2onnx logs ops it cannot map and leaves them in the graph: make that one error naming them."""
    import onnx

    foreign = Counter(n.op_type for n in model.graph.node if n.domain not in ONNX_DOMAINS)
    if foreign:
        ops = ", ".join(f"{op} (x{n})" if n > 1 else op for op, n in foreign.items())
        raise FerError(f"{source}: tf2onnx could not convert op {ops} to ONNX opset {OPSET}")
    try:
        onnx.checker.check_model(model)
    except Exception as exc:
        raise FerError(f"{source}: tf2onnx wrote an invalid ONNX model: {' '.join(str(exc).split())}") from None


def _rename(model: Any, renames: dict[str, str]) -> None:
    """Rename graph inputs/outputs (``input:0`` -> ``input``) everywhere they are used."""
    for vi in [*model.graph.input, *model.graph.output]:
        vi.name = renames.get(vi.name, vi.name)
    for node in model.graph.node:
        node.input[:] = [renames.get(n, n) for n in node.input]
        node.output[:] = [renames.get(n, n) for n in node.output]


def graph_to_onnx(graph_def: Any, out_path: Path, input_node: str, output_node: str) -> dict[str, Any]:
    """Frozen GraphDef -> float32 ONNX at ``out_path``; returns the manifest extras (tensor names, layout)."""
    tf2onnx = _tf2onnx()
    import onnx

    try:
        model, _ = tf2onnx.convert.from_graph_def(
            graph_def, input_names=[f"{input_node}:0"], output_names=[f"{output_node}:0"], opset=OPSET
        )
    except Exception as exc:
        raise FerError(
            f"tf2onnx.convert.from_graph_def (frozen graph {input_node} -> {output_node}) failed: "
            f"{' '.join(str(exc).split())}"
        ) from None
    _rename(model, {f"{input_node}:0": input_node, f"{output_node}:0": output_node})
    _check(model, "frozen graph")
    onnx.save(model, str(out_path))
    return {
        "input_name": input_node,
        "output_name": output_node,
        "layout": "NHWC",
        "opset": OPSET,
        "tf2onnx": tf2onnx.__version__,
    }


def tflite_to_onnx(tflite_path: Path, out_path: Path) -> dict[str, Any]:
    """TFLite -> float32 ONNX (tensor names kept); returns the manifest extras."""
    tf2onnx = _tf2onnx()
    import onnx

    try:
        model, _ = tf2onnx.convert.from_tflite(str(tflite_path), opset=OPSET)
    except Exception as exc:
        raise FerError(f"{tflite_path}: tf2onnx.convert.from_tflite failed: {' '.join(str(exc).split())}") from None
    _check(model, str(tflite_path))
    onnx.save(model, str(out_path))
    inp = model.graph.input[0]
    shape = [d.dim_value for d in inp.type.tensor_type.shape.dim]
    return {
        "input_name": inp.name,
        "output_names": [o.name for o in model.graph.output],
        "input_shape": shape,
        "layout": "NHWC",
        "opset": OPSET,
        "tf2onnx": tf2onnx.__version__,
    }


def quantize_qdq(float_path: Path, out_path: Path, input_name: str, samples: np.ndarray) -> dict[str, Any]:
    """QDQ model for the QNN HTP from ``float_path``, calibrated on ``samples`` (one model input per row)."""
    if samples is None or len(samples) == 0:
        raise FerError(f"{float_path}: QDQ quantisation needs calibration inputs, got an empty list")
    try:
        from onnxruntime.quantization import CalibrationDataReader, quantize
        from onnxruntime.quantization.execution_providers.qnn import get_qnn_qdq_config
    except ImportError:
        raise FerError("QDQ quantisation needs onnxruntime: pip install 'fer-agent[qnn]'") from None

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.i = 0

        def get_next(self):
            if self.i >= len(samples):
                return None
            self.i += 1
            return {input_name: np.ascontiguousarray(samples[self.i - 1 : self.i], dtype=np.float32)}

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the quantiser's "consider pre-processing" warnings on the root logger
    try:
        cfg = get_qnn_qdq_config(str(float_path), Reader())
        quantize(str(float_path), str(out_path), cfg)
    except Exception as exc:
        raise FerError(
            f"{float_path}: QDQ quantisation (get_qnn_qdq_config + quantize) failed: {' '.join(str(exc).split())}"
        ) from None
    finally:
        root.setLevel(level)
    return {**QDQ_RECIPE, "calibration_count": int(len(samples))}


def classifier_onnx(
    out: Path, graph_def: Any, input_node: str, output_node: str, calib: np.ndarray, calib_info: dict[str, Any]
) -> dict[str, FileEntry]:
    """``model.onnx`` and ``model_qdq.onnx`` in bundle ``out``; ``calib`` is [N, 48, 48, 1] normalised faces."""
    info = graph_to_onnx(graph_def, out / ONNX_FILES["onnx"], input_node, output_node)
    qinfo = quantize_qdq(out / ONNX_FILES["onnx"], out / ONNX_FILES["onnx_qdq"], input_node, calib)
    return {
        "onnx": file_entry(out, ONNX_FILES["onnx"], **info, quantized=False),
        "onnx_qdq": file_entry(out, ONNX_FILES["onnx_qdq"], **info, quantized=True, **qinfo, calibration=calib_info),
    }


def blazeface_frames(size: int = 128) -> np.ndarray:
    """Calibration inputs for BlazeFace: crops of the astronaut photo, mirrored too, preprocessed like the agent."""
    import cv2

    try:
        from skimage import data
    except ImportError:
        raise FerError("BlazeFace calibration frames need scikit-image: pip install 'fer-agent[emulation]'") from None
    photo = data.astronaut()  # RGB, 512x512, public domain; bundled with scikit-image
    frames = []
    for side in (512, 400, 300, 220, 160):
        for x, y in ((0, 0), (512 - side, 0), (0, 512 - side), ((512 - side) // 2, 0), (170 - side // 4, 40)):
            x, y = min(max(0, x), 512 - side), min(max(0, y), 512 - side)
            crop = photo[y : y + side, x : x + side]
            frames += [crop, crop[:, ::-1]]
    wide = np.zeros((384, 512, 3), np.uint8)  # a landscape frame: letterbox padding as in the agent
    wide[:, 64:448] = cv2.resize(photo, (384, 384), interpolation=cv2.INTER_AREA)
    frames.append(wide)
    return np.stack([_letterbox(f, size) for f in frames])


def _letterbox(rgb: np.ndarray, size: int) -> np.ndarray:
    """What agent/detectors/blazeface.py feeds the model: fit inside size x size, pad with 0, x/127.5 - 1."""
    import cv2

    h, w = rgb.shape[:2]
    s = size / max(h, w)
    rw, rh = max(1, int(round(w * s))), max(1, int(round(h * s)))
    px, py = (size - rw) // 2, (size - rh) // 2
    canvas = np.zeros((size, size, 3), np.uint8)
    canvas[py : py + rh, px : px + rw] = cv2.resize(np.ascontiguousarray(rgb), (rw, rh), interpolation=cv2.INTER_AREA)
    return canvas.astype(np.float32) / np.float32(127.5) - np.float32(1.0)


def blazeface_onnx(out: Path, manifest_files: dict[str, FileEntry]) -> dict[str, FileEntry]:
    """``blazeface_short_onnx`` and ``blazeface_short_onnx_qdq`` beside the bundle's BlazeFace short TFLite."""
    if BLAZEFACE_SHORT not in manifest_files:
        return {}
    src = out / manifest_files[BLAZEFACE_SHORT].path
    stem = src.with_suffix("")
    fp, qp = stem.with_suffix(".onnx"), Path(f"{stem}_qdq.onnx")
    info = tflite_to_onnx(src, fp)
    frames = blazeface_frames(int(info["input_shape"][1]))
    qinfo = quantize_qdq(fp, qp, info["input_name"], frames)
    rel = lambda p: p.relative_to(out).as_posix()  # noqa: E731
    lic = manifest_files[BLAZEFACE_SHORT].extra.get("license")
    common = {**info, **({"license": lic} if lic else {}), "source_file": Path(src).name}
    return {
        f"{BLAZEFACE_SHORT}_onnx": file_entry(out, rel(fp), **common, quantized=False),
        f"{BLAZEFACE_SHORT}_onnx_qdq": file_entry(
            out,
            rel(qp),
            **common,
            quantized=True,
            **qinfo,
            calibration={"frames": len(frames), "source": "skimage.data.astronaut crops"},
        ),
    }


def calibration_faces(data_path: str, manifest: Manifest, count: int, seed: int) -> tuple[np.ndarray, dict[str, Any]]:
    """``count`` Training faces balanced across classes, through the manifest's preprocessing."""
    from agent.contracts.preprocess import normalize
    from host_tools import calibration
    from host_tools import data as fer_data

    train = fer_data.load(data_path).split("Training")
    idx = calibration.balanced_indices(train.y, count, seed)
    x = normalize(train.x[idx], manifest.input.normalization)[..., None]
    return x.astype(np.float32), calibration_info(train.y[idx], seed)


def calibration_info(labels: np.ndarray, seed: int) -> dict[str, Any]:
    """The manifest's record of the calibration faces: how many, which seed, per class."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=len(LABELS))
    return {
        "count": int(len(labels)),
        "seed": seed,
        "split": "Training",
        "balanced": True,
        "per_class": {lab: int(c) for lab, c in zip(LABELS, counts, strict=False)},
    }


def add_onnx(bundle: Path, data_path: str, count: int = 500, seed: int = 0, detectors: bool = True) -> Manifest:
    """Write the ONNX files into an existing bundle (from its frozen graph) and record them in the manifest."""
    import dataclasses

    import tensorflow as tf  # before onnxruntime's QNN libraries (docs/qnn.md, pitfalls)

    _tf2onnx()  # fail before loading the data
    manifest = load_manifest(bundle, verify=False)
    manifest.verify(["frozen_graph"])
    entry = manifest.files["frozen_graph"]
    graph_def = tf.compat.v1.GraphDef()
    graph_def.ParseFromString(manifest.path_of("frozen_graph").read_bytes())
    calib, info = calibration_faces(data_path, manifest, count, seed)
    files = dict(manifest.files)
    files.update(
        classifier_onnx(
            bundle,
            graph_def,
            str(entry.extra.get("input_node", manifest.input.name)),
            str(entry.extra.get("output_node", manifest.output.name)),
            calib,
            info,
        )
    )
    if detectors:
        manifest.verify([BLAZEFACE_SHORT] if BLAZEFACE_SHORT in files else [])
        files.update(blazeface_onnx(bundle, files))
    updated = dataclasses.replace(manifest, files=files)
    updated.write(bundle)
    return updated


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "onnx",
        help="add model.onnx / model_qdq.onnx (QNN HTP) and BlazeFace ONNX to a bundle",
        description="Convert a bundle's frozen graph to ONNX (float32) and a QDQ model for the QNN HTP "
        "backend, calibrated on class-balanced Training faces; BlazeFace short-range too. "
        "`fer-host export` does this as part of the export.",
    )
    p.add_argument("bundle", type=Path, help="model bundle directory (with manifest.json and model.pb)")
    p.add_argument("--data", required=True, help="FER2013 data: Training faces for the QDQ calibration")
    p.add_argument("--calibration-rows", type=int, default=500, help="Training faces, balanced across classes")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-detectors", action="store_true", help="skip the BlazeFace ONNX files")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    m = add_onnx(args.bundle, args.data, args.calibration_rows, args.seed, detectors=not args.no_detectors)
    roles = [r for r in m.files if r.endswith("onnx") or r.endswith("onnx_qdq")]
    print(f"wrote {args.bundle}/manifest.json: {', '.join(f'{r} ({m.files[r].path})' for r in roles)}")
    return 0
