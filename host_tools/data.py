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
import json
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
CACHE_VERSION = 2  # 2: the cache also keeps where and why rows were skipped
HEADER = "emotion,pixels,Usage"
_QUOTE_MAX = 40  # characters of a bad value quoted in a message (a pixels field is ~9 KB)
_WHERE_MAX = 10  # rows / files named in the skip summary
# Folder names used by image-folder releases, mapped to FER2013's Usage values.
_FOLDER_SPLITS = {
    "train": "Training",
    "training": "Training",
    "validation": "PublicTest",
    "val": "PublicTest",
    "publictest": "PublicTest",
    "test": "PublicTest",
    "privatetest": "PrivateTest",
}


class DataError(FerError):
    """A data file, row or image is unusable; the message names it."""


class BadRow(ValueError):
    """A row that cannot be used: ``reason`` groups like rows in the skip summary, the message has the detail."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


def quote(value: str, limit: int = _QUOTE_MAX) -> str:
    """``repr`` of ``value``, cut to ``limit`` characters with the full length said (never a 9 KB message)."""
    if len(value) <= limit:
        return repr(value)
    return f"{value[:limit]!r}... ({len(value):,} characters)"


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
    skipped_where: list[str] = field(default_factory=list)  # first rows (CSV row numbers) or files skipped
    skipped_reasons: dict[str, int] = field(default_factory=dict)  # reason -> how many rows

    def note_skipped(self, where: str, reason: str, message: str) -> None:
        self.skipped += 1
        self.skipped_reasons[reason] = self.skipped_reasons.get(reason, 0) + 1
        if len(self.skipped_where) < _WHERE_MAX:
            self.skipped_where.append(where)
        if len(self.skipped_examples) < 5:
            self.skipped_examples.append(message)

    def skip_summary(self) -> str:
        """One line: how many, which (the first few), how many per reason. Empty when nothing was skipped."""
        if not self.skipped:
            return ""
        unit = ("file" if self.source.is_dir() else "row") + ("s" if self.skipped > 1 else "")
        where = ", ".join(self.skipped_where)
        if self.skipped > len(self.skipped_where):
            where += f", ... ({self.skipped - len(self.skipped_where)} more)"
        reasons = ", ".join(
            f"{n} {reason}" for reason, n in sorted(self.skipped_reasons.items(), key=lambda kv: -kv[1])
        )
        return f"skipped {self.skipped} bad {unit} of {self.source} ({unit} {where}): {reasons}"

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
    base = os.environ.get("FER_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", str(Path.home() / ".cache")), "fer-host"
    )
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
        arrays["skipped_detail"] = np.array(
            json.dumps(
                {"where": data.skipped_where, "reasons": data.skipped_reasons, "examples": data.skipped_examples}
            )
        )
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, **arrays)
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only cache dir must not stop training


def _read_cache(path: Path, source: Path) -> Dataset:
    with np.load(path) as z:
        data = Dataset(source=source, skipped=int(z["skipped"]))
        detail = json.loads(str(z["skipped_detail"]))
        data.skipped_where, data.skipped_reasons = detail["where"], detail["reasons"]
        data.skipped_examples = detail["examples"]
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
                raise DataError(f"{path}: file is empty (expected header {HEADER})") from None
            cols = [c.strip() for c in header]
            missing = [c for c in ("emotion", "pixels", "Usage") if c not in cols]
            if missing:
                if cols and cols[0].lstrip("-").isdigit():  # a data row where the header should be
                    raise DataError(
                        f"{path}: row 1: no header line; expected the first line to be {HEADER}, "
                        f"got a data row ({quote(','.join(header))})"
                    )
                raise DataError(
                    f"{path}: row 1: missing column(s) {', '.join(missing)} "
                    f"(expected header {HEADER}, got {quote(','.join(cols), 80)})"
                )
            ie, ip, iu = cols.index("emotion"), cols.index("pixels"), cols.index("Usage")
            for rowno, row in enumerate(reader, start=2):
                if not row:
                    continue
                try:
                    label, pixels, usage = _parse_row(row, ie, ip, iu)
                except BadRow as exc:
                    msg = f"{path}: row {rowno}: {exc}"
                    if not skip_bad_rows:
                        raise DataError(msg + " (use --skip-bad-rows to skip and count bad rows)") from None
                    data.note_skipped(str(rowno), exc.reason, msg)
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
        raise BadRow("with too few fields", f"has {len(row)} fields, expected at least {max(ie, ip, iu) + 1}")
    try:
        label = int(row[ie])
    except ValueError:
        raise BadRow("with a non-integer emotion", f"emotion {quote(row[ie])} is not an integer") from None
    if not 0 <= label < NUM_CLASSES:
        raise BadRow(f"with emotion outside 0-{NUM_CLASSES - 1}", f"emotion {label} outside 0-{NUM_CLASSES - 1}")
    usage = row[iu].strip()
    if usage not in SPLITS:
        raise BadRow("with an unknown Usage", f"Usage {quote(usage)} is not one of {', '.join(SPLITS)}")
    tokens = row[ip].split()
    if len(tokens) != PIXELS:
        raise BadRow(f"without {PIXELS} pixels", f"pixels has {len(tokens)} values, expected {PIXELS}")
    try:
        values = np.array(tokens, dtype=np.int32)
    except ValueError:
        bad = next((t for t in tokens if not t.lstrip("-").isdigit()), tokens[0])
        raise BadRow("with a non-integer pixel", f"pixel value {quote(bad)} is not an integer") from None
    except OverflowError:  # an integer too large for int32
        bad = max(tokens, key=lambda t: len(t.lstrip("-0")))
        raise BadRow("with a pixel outside 0-255", f"pixel value {quote(bad)} outside 0-255") from None
    if values.min() < 0 or values.max() > 255:
        raise BadRow(
            "with a pixel outside 0-255",
            f"pixel value {int(values.min() if values.min() < 0 else values.max())} outside 0-255",
        )
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
            raise DataError(
                f"{sdir}: unknown split folder; expected train, validation, test, Training, PublicTest or PrivateTest"
            ) from None
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
                    data.note_skipped(str(f.relative_to(root)), "unreadable", msg)
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
