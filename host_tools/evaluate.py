"""``fer-host evaluate``: a bundle's TFLite files (or, ``--backend qnn``, its QNN HTP model) on any split.

Evaluates exactly what ships (the TFLite files, through the manifest's
normalisation), not the Keras checkpoint, so the numbers are the board's.
``--backend qnn`` runs ``model_qdq.onnx`` (or, with ``--soc``, that SoC's
compiled context) on the QNN HTP backend with CPU fallback off, and compares
its answers with the float TFLite file; on x86_64 that is the HTP simulator,
whose timing is never NPU time. ``--record`` writes ``metrics.accuracy_htp``
and friends into the manifest.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np

from agent.contracts.errors import FerError
from agent.contracts.manifest import load_manifest
from agent.contracts.preprocess import normalize
from host_tools import data as fer_data
from host_tools import metrics, tflite_eval

VARIANTS = {"float": "tflite", "int8": "tflite_int8"}
BACKENDS = ("tflite", "qnn")


def evaluate(
    bundle: Path,
    data_path: str,
    split: str = "PublicTest",
    variants: tuple[str, ...] = ("float", "int8"),
    tta_flip: bool = False,
    skip_bad_rows: bool = False,
    threads: int | None = None,
) -> dict[str, Any]:
    manifest = load_manifest(bundle)
    dataset = fer_data.load(data_path, skip_bad_rows=skip_bad_rows)
    s = dataset.split(split)
    x = normalize(s.x, manifest.input.normalization)[..., None]
    result: dict[str, Any] = {
        "bundle": str(bundle),
        "model": f"{manifest.model_name} {manifest.model_version}",
        "data": str(data_path),
        "split": fer_data.resolve_split_name(split),
        "n": len(s),
        "skipped_rows": dataset.skipped,
        "skipped_first": dataset.skipped_where,
        "skipped_reasons": dataset.skipped_reasons,
        "skipped_summary": dataset.skip_summary(),
        "tta_flip": tta_flip,
        "variants": {},
    }
    for variant in variants:
        path = manifest.path_of(VARIANTS[variant])
        predict = tflite_eval.predict_mirrored if tta_flip else tflite_eval.predict
        probs = predict(path, x, threads=threads)
        result["variants"][variant] = metrics.report(s.y, probs)
    if {"float", "int8"} <= set(variants):
        f, q = result["variants"]["float"], result["variants"]["int8"]
        result["int8_minus_float_points"] = round((q["accuracy"] - f["accuracy"]) * 100, 2)
    return result


def evaluate_qnn(
    bundle: Path,
    data_path: str,
    split: str = "PublicTest",
    soc: str | None = None,
    limit: int | None = None,
    skip_bad_rows: bool = False,
    echo=None,
) -> dict[str, Any]:
    """Accuracy through the QNN HTP backend, and argmax agreement with the float TFLite file on the same faces."""
    from agent.contracts import qnn
    from host_tools import qnn_eval

    manifest = load_manifest(bundle)
    role = f"qnn_ctx_{qnn.soc(soc).name}" if soc else "onnx_qdq"
    model = manifest.path_of(role)
    dataset = fer_data.load(data_path, skip_bad_rows=skip_bad_rows)
    s = dataset.split(split)
    n = len(s) if limit is None else min(limit, len(s))
    x = normalize(s.x[:n], manifest.input.normalization)[..., None]
    opts = qnn.soc(soc).provider_options() if soc else None
    progress = (lambda i, total: echo(f"  {i}/{total} faces")) if echo else None
    htp, seconds = qnn_eval.predict(model, x, opts, progress)
    ref = tflite_eval.predict(manifest.path_of("tflite"), x)
    rep = metrics.report(s.y[:n], htp)
    return {
        "bundle": str(bundle),
        "model": f"{manifest.model_name} {manifest.model_version}",
        "data": str(data_path),
        "split": fer_data.resolve_split_name(split),
        "n": n,
        "skipped_rows": dataset.skipped,
        "backend": "qnn",
        "role": role,
        "file": manifest.files[role].path,
        "qnn_version": qnn.qnn_version(),
        "simulated": qnn.htp_is_simulated(),
        "ms_per_face": round(seconds * 1000, 1),
        "timing": qnn_eval.timing_note(),
        "variants": {"htp": rep},
        "float_accuracy": metrics.report(s.y[:n], ref)["accuracy"],
        "agreement_with_float": round(float((htp.argmax(1) == ref.argmax(1)).mean()), 4),
        "max_abs_diff_vs_float": round(float(np.abs(htp - ref).max()), 4),
    }


def record_htp(bundle: Path, res: dict[str, Any]) -> None:
    """Write the HTP measurement into the manifest's metrics (full PublicTest only)."""
    manifest = load_manifest(bundle)
    if res["split"] != manifest.metrics.get("split", "PublicTest") or res["n"] != manifest.metrics.get("n", res["n"]):
        raise FerError(
            f"--record needs the full {manifest.metrics.get('split', 'PublicTest')} split "
            f"(n={manifest.metrics.get('n')}), got {res['split']} n={res['n']}"
        )
    rep = res["variants"]["htp"]
    backend = f"QNN {res['qnn_version']} HTP {'simulator (x86_64)' if res['simulated'] else 'on device'}"
    metrics_ = {
        **manifest.metrics,
        "accuracy_htp": rep["accuracy"],
        "macro_f1_htp": rep["macro_f1"],
        "htp_agreement_with_float": res["agreement_with_float"],
        "htp_file": res["file"],
        "htp_backend": backend,
        "htp_ms_per_face": res["ms_per_face"],
        "htp_timing": res["timing"],
    }
    dataclasses.replace(manifest, metrics=metrics_).write(Path(bundle))


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="accuracy, per-class metrics and confusion matrix of a bundle",
        description="Evaluate a bundle's float and int8 TFLite files on a split of FER2013 CSV or image-folder data.",
    )
    p.add_argument("bundle", type=Path, help="model bundle directory (with manifest.json)")
    p.add_argument("--data", required=True, help="FER2013 .csv/.csv.gz or image-folder root")
    p.add_argument("--split", default="PublicTest", help="Training, PublicTest, PrivateTest (or train/validation/test)")
    p.add_argument("--variant", choices=["float", "int8", "both"], default="both")
    p.add_argument("--tta", action="store_true", help="average with the horizontally flipped face")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--skip-bad-rows", action="store_true", help="skip and count bad rows instead of stopping")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument(
        "--backend",
        choices=BACKENDS,
        default="tflite",
        help="qnn: model_qdq.onnx on the QNN HTP backend (x86_64: the HTP simulator, ~0.1-0.3 s per face)",
    )
    p.add_argument("--soc", help="with --backend qnn: run that SoC's compiled context (files.qnn_ctx_<soc>)")
    p.add_argument("--limit", type=int, help="with --backend qnn: only the first N faces of the split")
    p.add_argument(
        "--record",
        action="store_true",
        help="with --backend qnn: write metrics.accuracy_htp (and agreement, timing) into the manifest",
    )
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    if args.backend == "qnn":
        return _run_qnn(args)
    if args.soc or args.limit or args.record:
        raise FerError("--soc, --limit and --record go with --backend qnn")
    variants = ("float", "int8") if args.variant == "both" else (args.variant,)
    res = evaluate(args.bundle, args.data, args.split, variants, args.tta, args.skip_bad_rows, args.threads)
    if args.json:
        print(json.dumps(res, indent=2))
        return 0
    print(
        f"{res['model']} on {res['split']} of {res['data']} (n={res['n']}, skipped rows {res['skipped_rows']}"
        f"{', flip TTA' if res['tta_flip'] else ''})"
    )
    if res["skipped_summary"]:
        print(res["skipped_summary"])
    for variant, rep in res["variants"].items():
        print()
        print(metrics.format_table(rep, title=f"[{variant}]"))
        print("confusion matrix (rows true, columns predicted):")
        for row in rep["confusion_matrix"]:
            print("  " + " ".join(f"{v:5d}" for v in row))
    if "int8_minus_float_points" in res:
        print(f"\nint8 - float: {res['int8_minus_float_points']:+.2f} points")
    return 0


def _run_qnn(args: argparse.Namespace) -> int:
    if args.tta:
        raise FerError("--tta is not available with --backend qnn (export --flip-average puts the mirror in the graph)")
    from host_tools.qnn_eval import timing_note

    if not args.json:
        print(f"# QNN HTP backend, CPU fallback off; {timing_note()}")
    res = evaluate_qnn(
        args.bundle, args.data, args.split, args.soc, args.limit, args.skip_bad_rows, echo=None if args.json else print
    )
    if args.record:
        record_htp(args.bundle, res)
    if args.json:
        print(json.dumps(res, indent=2))
        return 0
    rep = res["variants"]["htp"]
    print(
        f"{res['model']}: {res['file']} on the QNN {res['qnn_version']} HTP "
        f"({'simulator' if res['simulated'] else 'device'}), {res['split']} n={res['n']}"
    )
    print()
    print(metrics.format_table(rep, title="[htp]"))
    print(
        f"\nfloat TFLite on the same faces: {res['float_accuracy'] * 100:.2f}%; argmax agreement "
        f"{res['agreement_with_float'] * 100:.1f}%, max |p_htp - p_float| {res['max_abs_diff_vs_float']:.3f}"
    )
    print(f"{res['ms_per_face']:.1f} ms per face ({res['timing']})")
    if args.record:
        print(f"recorded metrics.accuracy_htp = {rep['accuracy']} in {args.bundle}/manifest.json")
    return 0
