"""``fer-host make-raw``: images, folders or FER2013 rows -> raw float32 tensors + input_list.txt.

The pre-processing step of the SDK's own examples, done with the bundle's
preprocessing contract (``agent.contracts.preprocess``) so the files are byte-for-byte
what the agent feeds snpe-net-run. Use the list to run snpe-net-run by hand,
to check a DLC against TFLite, or (``--calibration N``) to quantise.
"""

from __future__ import annotations

import argparse
import csv
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from agent.contracts.errors import FerError
from agent.contracts.labels import LABELS
from agent.contracts.manifest import Manifest, load_manifest
from agent.contracts.preprocess import IMAGE_EXTENSIONS, image_tensor
from agent.contracts.rawtensor import write_input_list, write_raw
from host_tools import calibration
from host_tools import data as fer_data


def default_bundle() -> Path:
    from agent.contracts.manifest import default_bundle_path

    return default_bundle_path()


@dataclass
class Item:
    """One written tensor and where it came from (the index.csv row)."""

    raw: Path
    source: str
    label: str = ""


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def _unique(out_dir: Path, stem: str, used: set[str]) -> Path:
    name, k = stem, 1
    while name in used:
        k += 1
        name = f"{stem}_{k}"
    used.add(name)
    return out_dir / f"{name}.raw"


def make_raw(
    sources: list[Path],
    manifest: Manifest,
    out_dir: Path,
    split: str = "PublicTest",
    limit: int = 0,
    calibration_n: int = 0,
    seed: int = 0,
    skip_bad_rows: bool = False,
) -> list[Item]:
    """Write tensors for every source; returns them in input-list order."""
    spec = manifest.input
    out_dir.mkdir(parents=True, exist_ok=True)
    items: list[Item] = []
    used: set[str] = set()
    for src in sources:
        if not src.exists():
            raise FerError(f"{src}: no such file or directory")
        if src.is_file() and src.suffix.lower() in IMAGE_EXTENSIONS:
            items.append(_image_item(src, spec, out_dir, used))
        elif src.is_dir() and _images_in(src):
            items += [_image_item(p, spec, out_dir, used) for p in _images_in(src)]
        else:  # FER2013 CSV (.csv/.csv.gz) or a <split>/<class>/ image tree
            ds = fer_data.load(src, skip_bad_rows=skip_bad_rows)
            part = ds.split("Training" if calibration_n else split)
            if calibration_n:
                idx = calibration.balanced_indices(part.y, calibration_n, seed)
            else:
                idx = np.arange(len(part)) if not limit else np.arange(min(limit, len(part)))
            name = fer_data.resolve_split_name("Training" if calibration_n else split)
            for i in idx:
                label = LABELS[int(part.y[i])]
                path = _unique(out_dir, f"{name}_{int(i):05d}_{label}", used)
                write_raw(path, image_tensor(part.x[i], spec))
                items.append(Item(path.resolve(), f"{src}:{name}[{int(i)}]", label))
        if limit and len(items) >= limit and not calibration_n:
            items = items[:limit]
            break
    if not items:
        raise FerError(f"no images or rows found in {', '.join(map(str, sources))}")
    return items


def _image_item(path: Path, spec, out_dir: Path, used: set[str]) -> Item:
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None or img.size == 0:
        raise FerError(f"{path}: unreadable image")
    if img.dtype != np.uint8:
        img = cv2.convertScaleAbs(img, alpha=255.0 / max(1, int(img.max())))
    raw = _unique(out_dir, path.stem, used)
    write_raw(raw, image_tensor(img, spec))
    return Item(raw.resolve(), str(path))


def write_outputs(
    items: list[Item], out_dir: Path, list_name: str, header: str | None, input_name: str | None, prefix: str | None
) -> Path:
    paths = [f"{prefix.rstrip('/')}/{it.raw.name}" if prefix else str(it.raw) for it in items]
    lst = write_input_list(
        out_dir / list_name,
        paths,
        input_name=input_name,
        output_names=[header[1:]] if header else None,
        mark=header[:1] if header else "#",
    )
    with open(out_dir / "index.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["raw", "source", "label"])
        for it, p in zip(items, paths, strict=False):
            w.writerow([p, it.source, it.label])
    return lst


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "make-raw",
        help="images/folders/FER2013 rows -> raw float32 tensors + input_list.txt",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "sources",
        nargs="+",
        type=Path,
        help="image files, folders of images, FER2013 .csv(.gz) or <split>/<class>/ trees",
    )
    p.add_argument(
        "--out", "-o", type=Path, required=True, help="directory for the .raw files, input_list.txt and index.csv"
    )
    p.add_argument(
        "--bundle",
        type=Path,
        default=None,
        help="model bundle whose preprocessing to use (default: the packaged bundle)",
    )
    p.add_argument(
        "--split", default="PublicTest", help="split to take rows from for CSV/tree sources (default PublicTest)"
    )
    p.add_argument("--limit", type=int, default=0, help="at most this many tensors (0 = all)")
    p.add_argument(
        "--calibration",
        type=int,
        default=0,
        metavar="N",
        help="instead: N Training rows balanced across classes (seeded), for snpe-dlc-quant(ize)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--list-name", default="input_list.txt")
    p.add_argument(
        "--output-header",
        choices=("none", "layer", "tensor"),
        default="none",
        help="first list line naming the output to save: none (default; the tool saves all outputs), "
        "layer ('#<name>') or tensor ('%%<name>', SNPE 2)",
    )
    p.add_argument("--named", action="store_true", help="write '<input name>:=<path>' lines instead of bare paths")
    p.add_argument(
        "--path-prefix",
        default=None,
        help="write '<prefix>/<file>.raw' in the list (where the files will be on the board) instead of absolute paths",
    )
    p.add_argument("--skip-bad-rows", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    manifest = load_manifest(args.bundle or default_bundle(), verify=False)
    if args.limit < 0 or args.calibration < 0:
        raise FerError("--limit and --calibration must be >= 0")
    items = make_raw(
        args.sources,
        manifest,
        args.out,
        split=args.split,
        limit=args.limit,
        calibration_n=args.calibration,
        seed=args.seed,
        skip_bad_rows=args.skip_bad_rows,
    )

    role = "dlc" if "dlc" in manifest.files else ""
    in_name, out_name = manifest.tensor_names(role)
    header = (
        None
        if args.calibration or args.output_header == "none"
        else ("#" if args.output_header == "layer" else "%") + out_name
    )
    lst = write_outputs(items, args.out, args.list_name, header, in_name if args.named else None, args.path_prefix)
    size = items[0].raw.stat().st_size
    labels = [it.label for it in items if it.label]
    per_class = ", ".join(f"{lab} {labels.count(lab)}" for lab in LABELS if labels.count(lab)) if labels else ""
    print(
        f"wrote {len(items)} tensors ({size} bytes each, shape {list(manifest.input.shape)}) and {lst}"
        + (f"; per class: {per_class}" if per_class else "")
    )
    return 0
