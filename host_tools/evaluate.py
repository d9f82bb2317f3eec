"""``fer-host evaluate``: a bundle's TFLite files on any split of CSV or folder data.

Evaluates exactly what ships (the TFLite files, through the manifest's
normalisation), not the Keras checkpoint, so the numbers are the board's.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from agent.contracts.manifest import load_manifest
from agent.contracts.preprocess import normalize
from host_tools import data as fer_data
from host_tools import metrics, tflite_eval

VARIANTS = {"float": "tflite", "int8": "tflite_int8"}


def evaluate(bundle: Path, data_path: str, split: str = "PublicTest", variants: tuple[str, ...] = ("float", "int8"),
             tta_flip: bool = False, skip_bad_rows: bool = False, threads: int | None = None) -> dict[str, Any]:
    manifest = load_manifest(bundle)
    dataset = fer_data.load(data_path, skip_bad_rows=skip_bad_rows)
    s = dataset.split(split)
    x = normalize(s.x, manifest.input.normalization)[..., None]
    result: dict[str, Any] = {"bundle": str(bundle), "model": f"{manifest.model_name} {manifest.model_version}",
                              "data": str(data_path), "split": fer_data.resolve_split_name(split), "n": len(s),
                              "skipped_rows": dataset.skipped,
                              "skipped_first": dataset.skipped_where, "skipped_reasons": dataset.skipped_reasons,
                              "skipped_summary": dataset.skip_summary(), "tta_flip": tta_flip, "variants": {}}
    for variant in variants:
        path = manifest.path_of(VARIANTS[variant])
        predict = tflite_eval.predict_mirrored if tta_flip else tflite_eval.predict
        probs = predict(path, x, threads=threads)
        result["variants"][variant] = metrics.report(s.y, probs)
    if {"float", "int8"} <= set(variants):
        f, q = result["variants"]["float"], result["variants"]["int8"]
        result["int8_minus_float_points"] = round((q["accuracy"] - f["accuracy"]) * 100, 2)
    return result


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="accuracy, per-class metrics and confusion matrix of a bundle",
                       description="Evaluate a bundle's float and int8 TFLite files on a split of FER2013 CSV or image-folder data.")
    p.add_argument("bundle", type=Path, help="model bundle directory (with manifest.json)")
    p.add_argument("--data", required=True, help="FER2013 .csv/.csv.gz or image-folder root")
    p.add_argument("--split", default="PublicTest", help="Training, PublicTest, PrivateTest (or train/validation/test)")
    p.add_argument("--variant", choices=["float", "int8", "both"], default="both")
    p.add_argument("--tta", action="store_true", help="average with the horizontally flipped face")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--skip-bad-rows", action="store_true", help="skip and count bad rows instead of stopping")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    variants = ("float", "int8") if args.variant == "both" else (args.variant,)
    res = evaluate(args.bundle, args.data, args.split, variants, args.tta, args.skip_bad_rows, args.threads)
    if args.json:
        print(json.dumps(res, indent=2))
        return 0
    print(f"{res['model']} on {res['split']} of {res['data']} (n={res['n']}, skipped rows {res['skipped_rows']}"
          f"{', flip TTA' if res['tta_flip'] else ''})")
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
