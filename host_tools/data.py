"""FER2013 loading: the original CSV layout and image-folder releases.

Every bad row or file is reported with its file and row number; with
``skip_bad_rows`` they are counted instead. Decoding the 87 MB CSV takes tens
of seconds, so decoded arrays are cached under a key made of the source file's
sha256 and the loader options.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import os
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from agent.contracts.errors import FerError
from agent.contracts.labels import LABELS, NUM_CLASSES, label_index
from agent.contracts.preprocess import IMAGE_EXTENSIONS

SIDE = 48
PIXELS = SIDE * SIDE
SPLITS = ("Training", "PublicTest", "PrivateTest")
CACHE_VERSION = 1
# Folder names used by image-folder releases, mapped to FER2013's Usage values.
_FOLDER_SPLITS = {
    "train": "Training", "training": "Training",
    "validation": "PublicTest", "val": "PublicTest", "publictest": "PublicTest", "test": "PublicTest",
    "privatetest": "PrivateTest",
}


class DataError(FerError):
    """A data file, row or image is unusable; the message names it."""


@dataclass
class Split:
    x: np.ndarray  # uint8 [N, 48, 48]
    y: np.ndarray  # int64 [N]

    def __len__(self) -> int:
        return len(self.y)

    def class_counts(self) -> list[int]:
        return np.bincount(self.y, minlength=NUM_CLASSES).tolist()


@dataclass
class Dataset:
    source: Path
    splits: dict[str, Split] = field(default_factory=dict)
    skipped: int = 0
    skipped_examples: list[str] = field(default_factory=list)

    def split(self, name: str) -> Split:
        name = resolve_split_name(name)
        if name not in self.splits or len(self.splits[name]) == 0:
            have = ", ".join(f"{k} ({len(v)})" for k, v in self.splits.items()) or "none"
            raise DataError(f"{self.source}: split {name!r} is empty or missing (splits present: {have})")
        return self.splits[name]


def resolve_split_name(name: str) -> str:
    low = name.strip().lower()
    for s in SPLITS:
        if s.lower() == low:
            return s
    if low in _FOLDER_SPLITS:
        return _FOLDER_SPLITS[low]
    raise DataError(f"unknown split {name!r}; expected one of {', '.join(SPLITS)} (or train/validation/test)")


def load(source: str | Path, skip_bad_rows: bool = False, cache_dir: Path | None = None) -> Dataset:
    """Load a FER2013 CSV (``.csv``/``.csv.gz``) or an image-folder tree, with caching."""
    source = Path(source)
    if not source.exists():
        raise DataError(f"{source}: no such file or directory")
    if source.is_dir():
        return load_folders(source, skip_bad_rows)
    cache = _cache_path(source, skip_bad_rows, cache_dir)
    if cache is not None and cache.exists():
        try:
            return _read_cache(cache, source)
        except Exception:  # corrupt cache: rebuild it rather than fail the run
            cache.unlink(missing_ok=True)
    data = load_csv(source, skip_bad_rows)
    if cache is not None:
        _write_cache(cache, data)
    return data


def default_cache_dir() -> Path:
    base = os.environ.get("FER_CACHE_DIR") or os.path.join(os.environ.get("XDG_CACHE_HOME", str(Path.home() / ".cache")), "fer-host")
    return Path(base)


def _cache_path(source: Path, skip_bad_rows: bool, cache_dir: Path | None) -> Path | None:
    if os.environ.get("FER_NO_CACHE"):
        return None
    h = hashlib.sha256()
    with open(source, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    key = f"{h.hexdigest()[:32]}-v{CACHE_VERSION}-{'skip' if skip_bad_rows else 'strict'}"
    return (cache_dir or default_cache_dir()) / f"{key}.npz"


def _write_cache(path: Path, data: Dataset) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays = {}
        for name, s in data.splits.items():
            arrays[f"{name}_x"] = s.x
            arrays[f"{name}_y"] = s.y
        arrays["skipped"] = np.array(data.skipped)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, **arrays)
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only cache dir must not stop training


def _read_cache(path: Path, source: Path) -> Dataset:
    with np.load(path) as z:
        data = Dataset(source=source, skipped=int(z["skipped"]))
        for name in SPLITS:
            if f"{name}_x" in z:
                data.splits[name] = Split(z[f"{name}_x"], z[f"{name}_y"])
    return data


def _open_text(path: Path) -> io.TextIOBase:
    try:
        if path.suffix == ".gz":
            return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
        return open(path, encoding="utf-8", newline="")
    except OSError as exc:
        raise DataError(f"{path}: cannot open: {exc.strerror}") from None


def load_csv(path: Path, skip_bad_rows: bool = False) -> Dataset:
    """Parse the original ``emotion,pixels,Usage`` layout. Row numbers count the header as row 1."""
    data = Dataset(source=path)
    xs: dict[str, list[np.ndarray]] = {s: [] for s in SPLITS}
    ys: dict[str, list[int]] = {s: [] for s in SPLITS}
    try:
        with _open_text(path) as fh:
            reader = csv.reader(fh)
            try:
                header = next(reader)
            except StopIteration:
                raise DataError(f"{path}: file is empty (expected header emotion,pixels,Usage)") from None
            cols = [c.strip() for c in header]
            missing = [c for c in ("emotion", "pixels", "Usage") if c not in cols]
            if missing:
                raise DataError(f"{path}: row 1: missing column(s) {', '.join(missing)} (header is {','.join(cols)})")
            ie, ip, iu = cols.index("emotion"), cols.index("pixels"), cols.index("Usage")
            for rowno, row in enumerate(reader, start=2):
                if not row:
                    continue
                try:
                    label, pixels, usage = _parse_row(row, ie, ip, iu)
                except ValueError as exc:
                    msg = f"{path}: row {rowno}: {exc}"
                    if not skip_bad_rows:
                        raise DataError(msg + " (use --skip-bad-rows to skip and count bad rows)") from None
                    data.skipped += 1
                    if len(data.skipped_examples) < 5:
                        data.skipped_examples.append(msg)
                    continue
                xs[usage].append(pixels)
                ys[usage].append(label)
    except (OSError, EOFError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path}: cannot read: {exc}") from None
    for s in SPLITS:
        if xs[s]:
            data.splits[s] = Split(np.stack(xs[s]).reshape(-1, SIDE, SIDE), np.asarray(ys[s], dtype=np.int64))
    if not data.splits:
        raise DataError(f"{path}: no usable rows")
    return data


def _parse_row(row: list[str], ie: int, ip: int, iu: int) -> tuple[int, np.ndarray, str]:
    if len(row) <= max(ie, ip, iu):
        raise ValueError(f"has {len(row)} fields, expected at least {max(ie, ip, iu) + 1}")
    try:
        label = int(row[ie])
    except ValueError:
        raise ValueError(f"emotion {row[ie]!r} is not an integer") from None
    if not 0 <= label < NUM_CLASSES:
        raise ValueError(f"emotion {label} outside 0-{NUM_CLASSES - 1}")
    usage = row[iu].strip()
    if usage not in SPLITS:
        raise ValueError(f"Usage {usage!r} is not one of {', '.join(SPLITS)}")
    tokens = row[ip].split()
    if len(tokens) != PIXELS:
        raise ValueError(f"pixels has {len(tokens)} values, expected {PIXELS}")
    try:
        values = np.array(tokens, dtype=np.int32)
    except ValueError:
        bad = next(t for t in tokens if not t.lstrip("-").isdigit())
        raise ValueError(f"pixel value {bad!r} is not an integer") from None
    if values.min() < 0 or values.max() > 255:
        raise ValueError(f"pixel value {int(values.min() if values.min() < 0 else values.max())} outside 0-255")
    return label, values.astype(np.uint8), usage


def load_folders(root: Path, skip_bad_rows: bool = False) -> Dataset:
    """``<root>/<split>/<class>/*.jpg|png``; images of any size are greyed and resized to 48x48."""
    data = Dataset(source=root)
    split_dirs = [d for d in sorted(root.iterdir()) if d.is_dir()]
    if not split_dirs:
        raise DataError(f"{root}: no split folders (expected e.g. {root}/train/happy/*.jpg)")
    for sdir in split_dirs:
        try:
            split = resolve_split_name(sdir.name)
        except DataError:
            raise DataError(f"{sdir}: unknown split folder; expected train, validation, test, Training, PublicTest or PrivateTest") from None
        xs: list[np.ndarray] = []
        ys: list[int] = []
        for cdir in sorted(d for d in sdir.iterdir() if d.is_dir()):
            try:
                label = label_index(cdir.name)
            except KeyError as exc:
                raise DataError(f"{cdir}: {exc.args[0]}") from None
            for f in sorted(cdir.iterdir()):
                if f.suffix.lower() not in IMAGE_EXTENSIONS:
                    continue
                img = cv2.imread(str(f), cv2.IMREAD_GRAYSCALE)
                if img is None or img.size == 0:
                    msg = f"{f}: unreadable image"
                    if not skip_bad_rows:
                        raise DataError(msg + " (use --skip-bad-rows to skip and count bad files)")
                    data.skipped += 1
                    if len(data.skipped_examples) < 5:
                        data.skipped_examples.append(msg)
                    continue
                if img.shape != (SIDE, SIDE):
                    img = cv2.resize(img, (SIDE, SIDE), interpolation=cv2.INTER_AREA)
                xs.append(img)
                ys.append(label)
        if not xs:
            raise DataError(f"{sdir}: split folder holds no images in class folders ({', '.join(LABELS)})")
        prev = data.splits.get(split)
        x, y = np.stack(xs), np.asarray(ys, dtype=np.int64)
        data.splits[split] = Split(np.concatenate([prev.x, x]), np.concatenate([prev.y, y])) if prev else Split(x, y)
    return data
