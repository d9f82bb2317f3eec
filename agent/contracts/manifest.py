"""The model bundle manifest: the only contract between host and board.

A bundle is a directory holding ``manifest.json`` plus the model files it
lists. The manifest says everything the board must know (labels, tensor
names, shape, layout, normalisation, files with sha256) so that nothing is
hard-coded twice. See ``docs/bundle.md`` for the field reference.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from agent.contracts.errors import ManifestError, clip
from agent.contracts.labels import LABELS

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
#: The bundle shipped inside the package (works from a wheel as well as a checkout).
DEFAULT_BUNDLE = Path(__file__).resolve().parents[1] / "models" / "default"
NORMALIZATION_FORMULA = "x = (pixel/255 - mean) / std"


@dataclass(frozen=True)
class Normalization:
    mean: float
    std: float
    formula: str = NORMALIZATION_FORMULA


@dataclass(frozen=True)
class InputSpec:
    name: str
    shape: tuple[int, int, int, int]
    normalization: Normalization
    layout: str = "NHWC"
    dtype: str = "float32"
    color: str = "grey"
    resize: str = "area"

    @property
    def height(self) -> int:
        return self.shape[1]

    @property
    def width(self) -> int:
        return self.shape[2]

    @property
    def channels(self) -> int:
        return self.shape[3]


@dataclass(frozen=True)
class OutputSpec:
    name: str
    kind: str  # "probabilities" or "logits"
    shape: tuple[int, int] = (1, len(LABELS))


@dataclass(frozen=True)
class FileEntry:
    path: str
    sha256: str
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Manifest:
    model_name: str
    model_version: str
    labels: tuple[str, ...]
    input: InputSpec
    output: OutputSpec
    files: dict[str, FileEntry]
    metrics: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION
    root: Path | None = None  # directory the manifest was read from

    def path_of(self, role: str) -> Path:
        """Absolute path of the file with ``role``; error names the role if absent."""
        if role not in self.files:
            raise ManifestError(
                f"{self._where()}: bundle has no {role!r} file (files: {', '.join(self.files) or 'none'})"
            )
        base = self.root or Path(".")
        return base / self.files[role].path

    def tensor_names(self, role: str) -> tuple[str, str]:
        """Input and output tensor names inside the file with ``role``.

        A converter may name tensors differently from the source graph (TFLite
        names, ``:0`` suffixes), so ``fer-host convert`` records them on the file
        entry; the manifest's own names are the fallback.
        """
        extra = self.files[role].extra if role in self.files else {}
        return str(extra.get("input_name") or self.input.name), str(extra.get("output_name") or self.output.name)

    def has(self, role: str) -> bool:
        return role in self.files and self.path_of(role).exists()

    def missing(self) -> list[str]:
        """Roles whose file is not in the bundle directory."""
        return sorted(role for role in self.files if not self.path_of(role).exists())

    def verify(self, roles: list[str] | None = None) -> None:
        """Check the sha256 of the named files, which must exist, or of every file present.

        A board bundle may omit files it never uses (frozen graph, SavedModel, the
        other detector): the stage that needs one fails naming it. A present file
        with the wrong hash always fails.
        """
        if roles is None:
            absent = set(self.missing())
            roles = [role for role in self.files if role not in absent]
        for role in roles:
            entry = self.files[role]
            checks = [(self.path_of(role), entry.sha256, f"files.{role}")]
            if "bin_path" in entry.extra:  # a QNN context: the EPContext model and the binary it loads
                checks.append(
                    (
                        (self.root or Path(".")) / str(entry.extra["bin_path"]),
                        str(entry.extra.get("bin_sha256")),
                        f"files.{role}.bin_path",
                    )
                )
            for path, expected, key in checks:
                if not path.exists():
                    raise ManifestError(f"{self._where()}: {key}: {path} does not exist")
                actual = sha256_of(path)
                if actual != expected:
                    raise ManifestError(
                        f"{path}: sha256 mismatch for {key} (manifest {expected[:12]}..., file {actual[:12]}...); "
                        "the file was modified or belongs to another bundle"
                    )

    def to_dict(self) -> dict[str, Any]:
        inp = self.input
        return {
            "format_version": self.format_version,
            "model": {"name": self.model_name, "version": self.model_version, **self.extra.get("model", {})},
            "labels": list(self.labels),
            "input": {
                "name": inp.name,
                "shape": list(inp.shape),
                "layout": inp.layout,
                "dtype": inp.dtype,
                "color": inp.color,
                "resize": inp.resize,
                "normalization": asdict(inp.normalization),
            },
            "output": {"name": self.output.name, "shape": list(self.output.shape), "kind": self.output.kind},
            "files": {role: {"path": e.path, "sha256": e.sha256, **e.extra} for role, e in self.files.items()},
            "metrics": self.metrics,
            **{k: v for k, v in self.extra.items() if k != "model"},
        }

    def write(self, directory: Path) -> Path:
        path = Path(directory) / MANIFEST_NAME
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    def _where(self) -> str:
        return str((self.root or Path(".")) / MANIFEST_NAME)


def to_probabilities(scores: np.ndarray, kind: str) -> np.ndarray:
    """Model output ``[..., C]`` -> probabilities: softmax only when ``output.kind`` is ``logits``."""
    if kind != "logits":
        return scores
    e = np.exp(scores - scores.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def default_bundle_path() -> Path:
    """The bundle inside the package: the agent's default and the host tools' default input."""
    return DEFAULT_BUNDLE


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    p = Path(path)
    if p.is_dir():  # SavedModel directories: hash every file, in sorted order
        for f in sorted(q for q in p.rglob("*") if q.is_file()):
            h.update(str(f.relative_to(p)).encode())
            h.update(f.read_bytes())
        return h.hexdigest()
    with open(p, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def file_entry(directory: Path, relpath: str, **extra: Any) -> FileEntry:
    return FileEntry(path=relpath, sha256=sha256_of(Path(directory) / relpath), extra=dict(extra))


def load_manifest(bundle: str | Path, verify: bool = True) -> Manifest:
    """Read ``<bundle>/manifest.json`` (or a manifest path); every error names the file and key."""
    path = Path(bundle)
    if path.is_dir():
        path = path / MANIFEST_NAME
    if not path.exists():
        raise ManifestError(f"{path}: model bundle manifest not found")
    try:
        raw = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{path}: cannot read manifest: {exc}") from None
    except json.JSONDecodeError as exc:
        raise ManifestError(f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}): {exc.msg}") from None
    manifest = parse_manifest(raw, where=str(path), root=path.parent)
    if verify:
        missing = manifest.missing()
        if missing:
            log.info("bundle %s: not present (fine unless configured): %s", manifest.root, ", ".join(missing))
        manifest.verify()
    return manifest


def _inside(root: Path, rel: str, key: str) -> None:
    """The file, with every symlink resolved, must lie inside the bundle: a checked path text is not enough."""
    base = Path(root).resolve()
    target = (base / rel).resolve()
    if not target.is_relative_to(base):
        raise ManifestError(f"{key} {rel!r} resolves to {target}, outside the bundle {base} (a symlink?)")


def parse_manifest(raw: Any, where: str = MANIFEST_NAME, root: Path | None = None) -> Manifest:
    def need(obj: Any, key: str, kind: type | tuple[type, ...], ctx: str) -> Any:
        if not isinstance(obj, dict) or key not in obj:
            raise ManifestError(f"{where}: missing key {ctx}{key}")
        val = obj[key]
        if (
            not isinstance(val, kind)
            or isinstance(val, bool)
            and bool not in (kind if isinstance(kind, tuple) else (kind,))
        ):
            raise ManifestError(f"{where}: key {ctx}{key} has wrong type {type(val).__name__}")
        return val

    if not isinstance(raw, dict):
        raise ManifestError(f"{where}: manifest must be a JSON object")
    version = need(raw, "format_version", int, "")
    if version != FORMAT_VERSION:
        raise ManifestError(f"{where}: format_version {version} is not supported (this agent reads {FORMAT_VERSION})")
    model = need(raw, "model", dict, "")
    labels = tuple(need(raw, "labels", list, ""))
    if labels != LABELS:
        raise ManifestError(f"{where}: key labels must be {list(LABELS)} in that order, "
                            f"got {clip(repr(list(labels)), 200)}")
    inp = need(raw, "input", dict, "")
    norm = need(inp, "normalization", dict, "input.")
    mean = need(norm, "mean", (int, float), "input.normalization.")
    std = need(norm, "std", (int, float), "input.normalization.")
    if std <= 0:
        raise ManifestError(f"{where}: key input.normalization.std must be > 0, got {std}")
    shape = need(inp, "shape", list, "input.")
    if len(shape) != 4 or not all(isinstance(d, int) and d > 0 for d in shape) or shape[3] != 1:
        raise ManifestError(f"{where}: key input.shape must be [N, H, W, 1] with positive ints, got {shape}")
    layout = inp.get("layout", "NHWC")
    if layout != "NHWC":
        raise ManifestError(f"{where}: key input.layout must be NHWC, got {layout!r}")
    dtype = inp.get("dtype", "float32")
    if dtype != "float32":
        raise ManifestError(f"{where}: key input.dtype must be float32, got {dtype!r}")
    out = need(raw, "output", dict, "")
    kind = need(out, "kind", str, "output.")
    if kind not in ("probabilities", "logits"):
        raise ManifestError(f"{where}: key output.kind must be 'probabilities' or 'logits', got {kind!r}")
    out_shape = out.get("shape", [1, len(labels)])
    if (
        not isinstance(out_shape, list)
        or len(out_shape) != 2
        or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in out_shape)
        or out_shape[1] != len(labels)
    ):
        raise ManifestError(
            f"{where}: key output.shape must be [N, {len(labels)}] (one score per label) "
            f"with positive ints, got {out_shape!r}"
        )
    files_raw = need(raw, "files", dict, "")
    files: dict[str, FileEntry] = {}
    for role, entry in files_raw.items():
        ctx = f"files.{role}."
        rel = need(entry, "path", str, ctx)
        if Path(rel).is_absolute() or ".." in Path(rel).parts:
            raise ManifestError(f"{where}: key {ctx}path must be relative to the bundle, got {rel!r}")
        digest = need(entry, "sha256", str, ctx)
        bin_rel = entry.get("bin_path", "")
        if not isinstance(bin_rel, str) or Path(bin_rel).is_absolute() or ".." in Path(bin_rel).parts:
            raise ManifestError(f"{where}: key {ctx}bin_path must be relative to the bundle, got {bin_rel!r}")
        if root is not None:
            _inside(root, rel, f"{where}: key {ctx}path")
            if bin_rel:
                _inside(root, bin_rel, f"{where}: key {ctx}bin_path")
        files[role] = FileEntry(rel, digest, {k: v for k, v in entry.items() if k not in ("path", "sha256")})
    known = {"format_version", "model", "labels", "input", "output", "files", "metrics"}
    extra: dict[str, Any] = {k: v for k, v in raw.items() if k not in known}
    extra["model"] = {k: v for k, v in model.items() if k not in ("name", "version")}
    return Manifest(
        model_name=need(model, "name", str, "model."),
        model_version=need(model, "version", str, "model."),
        labels=labels,
        input=InputSpec(
            name=need(inp, "name", str, "input."),
            shape=tuple(shape),  # type: ignore[arg-type]
            normalization=Normalization(float(mean), float(std), norm.get("formula", NORMALIZATION_FORMULA)),
            layout=layout,
            dtype=dtype,
            color=inp.get("color", "grey"),
            resize=inp.get("resize", "area"),
        ),
        output=OutputSpec(name=need(out, "name", str, "output."), kind=kind, shape=tuple(out_shape)),  # type: ignore[arg-type]
        files=files,
        metrics=raw.get("metrics", {}) or {},
        extra=extra,
        format_version=version,
        root=root,
    )
