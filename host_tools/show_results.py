"""``fer-host show-results OUTPUT_DIR --input-list FILE``: decode an snpe-net-run output directory.

snpe-net-run writes ``Result_<n>/<output>.raw`` for the n-th line of the
input list (header line not counted). This joins them back to the input
files and prints file -> label, confidence, every probability (table, CSV or
JSON), with the bundle's label order and a softmax when the model outputs
logits. It does what the SDK's ``show_*_classifications.py`` examples do,
but checks every file's size instead of trusting it.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from agent.contracts.errors import FerError
from agent.contracts.manifest import Manifest, load_manifest, to_probabilities
from agent.contracts.rawtensor import parse_input_list, read_result


@dataclass
class Row:
    index: int
    file: str
    label: str
    confidence: float
    probabilities: dict[str, float]
    truth: str = ""  # true label when make-raw's index.csv knows it


def output_name_for(manifest: Manifest, list_outputs: list[str], override: str | None) -> str:
    if override:
        return override
    for role in ("dlc", "dlc_quantized", "dlc_htp"):
        if role in manifest.files and manifest.files[role].extra.get("output_name"):
            return str(manifest.files[role].extra["output_name"])
    if len(list_outputs) == 1:
        return list_outputs[0]
    return manifest.output.name


def decode(
    output_dir: Path,
    input_list: Path,
    manifest: Manifest,
    output_name: str | None = None,
    apply_softmax: bool | None = None,
) -> list[Row]:
    """One row per input-list line; every missing or wrongly sized result file is an error naming it."""
    if not output_dir.is_dir():
        raise FerError(f"{output_dir}: output directory does not exist")
    parsed = parse_input_list(input_list)
    if not parsed.entries:
        raise FerError(f"{input_list}: lists no inputs")
    name = output_name_for(manifest, parsed.output_names, output_name)
    labels = list(manifest.labels)
    use_softmax = manifest.output.kind == "logits" if apply_softmax is None else apply_softmax
    rows = []
    for n, entry in enumerate(parsed.entries):
        scores = read_result(
            output_dir, n, name, len(labels), context=f"input-list line {n + 1}: {' '.join(entry.values())}"
        )
        probs = to_probabilities(scores.astype(np.float64), "logits" if use_softmax else "probabilities")
        best = int(np.argmax(probs))
        rows.append(
            Row(
                n,
                " ".join(entry.values()),
                labels[best],
                float(probs[best]),
                {lab: float(p) for lab, p in zip(labels, probs, strict=False)},
            )
        )
    return rows


def attach_truth(rows: list[Row], index_csv: Path) -> int:
    """Fill ``Row.truth`` from make-raw's ``index.csv`` (raw path -> label); returns how many matched."""
    try:
        with open(index_csv, newline="") as fh:
            truth = {r["raw"]: r["label"] for r in csv.DictReader(fh) if r.get("label")}
    except (OSError, KeyError, csv.Error) as exc:
        raise FerError(f"{index_csv}: cannot read the truth table: {exc}") from None
    matched = 0
    for r in rows:
        label = truth.get(r.file) or truth.get(Path(r.file).name)
        if label:
            r.truth = label
            matched += 1
    return matched


def render(rows: list[Row], fmt: str, labels: list[str]) -> str:
    with_truth = any(r.truth for r in rows)
    if fmt == "json":
        return json.dumps(
            [
                {
                    "index": r.index,
                    "file": r.file,
                    "label": r.label,
                    "confidence": round(r.confidence, 6),
                    **({"truth": r.truth} if with_truth else {}),
                    "probabilities": {k: round(v, 6) for k, v in r.probabilities.items()},
                }
                for r in rows
            ],
            indent=2,
        )
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["index", "file", "label", "confidence", *(["truth"] if with_truth else []), *labels])
        for r in rows:
            w.writerow(
                [
                    r.index,
                    r.file,
                    r.label,
                    f"{r.confidence:.6f}",
                    *([r.truth] if with_truth else []),
                    *(f"{r.probabilities[k]:.6f}" for k in labels),
                ]
            )
        return buf.getvalue().rstrip("\n")
    width = max([len(Path(r.file).name) for r in rows] + [4])
    truth_head = f"{'truth':<8} " if with_truth else ""
    head = f"{'file':<{width}}  {'label':<8} {'conf':>6}  {truth_head}" + " ".join(f"{k[:8]:>8}" for k in labels)
    lines = [head, "-" * len(head)]
    for r in rows:
        truth = f"{(r.truth or '?'):<8} " if with_truth else ""
        lines.append(
            f"{Path(r.file).name:<{width}}  {r.label:<8} {r.confidence:6.3f}  {truth}"
            + " ".join(f"{r.probabilities[k]:8.3f}" for k in labels)
        )
    known = [r for r in rows if r.truth]
    if known:
        right = sum(r.truth == r.label for r in known)
        lines.append(f"accuracy: {right}/{len(known)} = {right / len(known):.3f} (true labels from index.csv)")
    return "\n".join(lines)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "show-results",
        help="decode snpe-net-run Result_<n>/<output>.raw files into labels",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("output_dir", type=Path, help="snpe-net-run --output_dir")
    p.add_argument("--input-list", type=Path, required=True, help="the input list snpe-net-run was given")
    p.add_argument(
        "--bundle", type=Path, default=None, help="model bundle (labels, output name/kind); default: the packaged one"
    )
    p.add_argument("--output-name", default=None, help="output tensor name (default: from the manifest)")
    p.add_argument("--format", choices=("table", "csv", "json"), default="table")
    p.add_argument(
        "--softmax",
        choices=("auto", "yes", "no"),
        default="auto",
        help="auto = apply when the manifest says the output is logits",
    )
    p.add_argument(
        "--truth",
        default="auto",
        metavar="INDEX_CSV",
        help="true labels: make-raw's index.csv (auto = index.csv beside the input list, if any; none = off)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from host_tools.make_raw import default_bundle

    manifest = load_manifest(args.bundle or default_bundle(), verify=False)
    rows = decode(
        args.output_dir,
        args.input_list,
        manifest,
        args.output_name,
        None if args.softmax == "auto" else args.softmax == "yes",
    )
    if args.truth != "none":
        index = args.input_list.parent / "index.csv" if args.truth == "auto" else Path(args.truth)
        if index.exists():
            attach_truth(rows, index)
        elif args.truth != "auto":
            raise FerError(f"{index}: truth table does not exist")
    sys.stdout.write(render(rows, args.format, list(manifest.labels)) + "\n")
    return 0
