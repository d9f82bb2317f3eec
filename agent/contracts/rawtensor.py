"""Raw tensor files and snpe-net-run input lists: the on-disk contract.

* A raw tensor file is the bare float32 little-endian bytes of one NHWC input
  (48*48*1*4 = 9216 bytes for the default model), no header.
* An input list is a text file, one line per inference. A line is either a
  path, or ``name:=path`` pairs separated by spaces for multi-input models. An
  optional first line names the outputs to save: ``#<layer> ...`` (output
  layer names) or, on SNPE 2.x, ``%<tensor> ...`` (output tensor names).
  Without it snpe-net-run saves every output.
* snpe-net-run writes ``<output_dir>/Result_<n>/<output-name>.raw`` for the n-th
  line (counting lines that are not the ``#`` header), in float32 LE.

See ``docs/bundle.md``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from agent.contracts.errors import FerError

RAW_DTYPE = np.dtype("<f4")


def write_raw(path: str | Path, tensor: np.ndarray) -> Path:
    """Write a tensor as float32 LE bytes (C order, so NHWC stays NHWC)."""
    arr = np.ascontiguousarray(tensor, dtype=RAW_DTYPE)
    path = Path(path)
    with open(path, "wb") as fh:
        fh.write(arr.tobytes())
    return path


def read_raw(path: str | Path, shape: tuple[int, ...] | None = None) -> np.ndarray:
    """Read a float32 LE raw file; with ``shape`` the byte size must match exactly."""
    path = Path(path)
    data = np.fromfile(path, dtype=RAW_DTYPE)
    if shape is not None:
        expected = int(np.prod(shape))
        if data.size != expected:
            raise FerError(f"{path}: holds {data.size * 4} bytes, expected {expected * 4} for shape {list(shape)}")
        data = data.reshape(shape)
    return data.astype(np.float32, copy=False)


@dataclass
class InputList:
    """A parsed snpe-net-run input list."""

    entries: list[dict[str, str]] = field(default_factory=list)  # one {input_name or "": path} per line
    output_names: list[str] = field(default_factory=list)

    def paths(self) -> list[str]:
        """First input's path of every entry (single-input models)."""
        return [next(iter(e.values())) for e in self.entries]


def format_input_list(
    entries: list[str | Path | dict[str, str | Path]],
    output_names: list[str] | None = None,
    mark: str = "#",
    input_name: str | None = None,
) -> str:
    """Text of an input list: a path, or a ``{input_name: path}`` dict per inference.

    ``mark`` is ``#`` (output layer names) or ``%`` (output tensor names, SNPE 2.x);
    no ``output_names`` means no header line, so the tool saves every output.
    """
    lines = [mark + " ".join(output_names)] if output_names else []
    for e in entries:
        if isinstance(e, dict):
            lines.append(" ".join(f"{name}:={p}" for name, p in e.items()))
        else:
            lines.append(f"{input_name}:={e}" if input_name else str(e))
    return "\n".join(lines) + "\n"


def write_input_list(
    path: str | Path,
    files: list[str | Path | dict[str, str | Path]],
    output_names: list[str] | None = None,
    input_name: str | None = None,
    mark: str = "#",
) -> Path:
    """Write an input list; ``input_name`` selects the ``name:=path`` form for single-input models."""
    path = Path(path)
    path.write_text(format_input_list(files, output_names, mark, input_name))
    return path


def parse_input_list(path: str | Path) -> InputList:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise FerError(f"{path}: cannot read input list: {exc.strerror}") from None
    result = InputList()
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        if line.startswith(("#", "%")):
            if result.entries or result.output_names:
                raise FerError(f"{path}:{lineno}: '{line[0]}' output-name line must be the first line")
            result.output_names = line[1:].split()
            continue
        entry: dict[str, str] = {}
        for tok in line.split():
            if ":=" in tok:
                name, _, p = tok.partition(":=")
                entry[name] = p
            else:
                if entry:
                    raise FerError(f"{path}:{lineno}: mixes plain paths and name:=path pairs")
                entry[""] = tok
        result.entries.append(entry)
    return result


def result_path(output_dir: str | Path, index: int, output_name: str) -> Path:
    """Where snpe-net-run puts output ``output_name`` for input-list line ``index``."""
    return Path(output_dir) / f"Result_{index}" / f"{output_name}.raw"


def read_result(
    output_dir: str | Path, index: int, output_name: str, size: int | None = None, context: str = ""
) -> np.ndarray:
    """Output ``output_name`` of input-list line ``index`` as flat float32, the one reader of ``Result_<n>``.

    TensorFlow-converted DLCs may name the file ``<name>:0.raw``; both are tried.
    With ``size`` the element count must match. A missing or short file is a
    :class:`FerError` naming it (``context`` goes into the message).
    """
    first = result_path(output_dir, index, output_name)
    path = next((p for p in (first, result_path(output_dir, index, output_name + ":0")) if p.exists()), None)
    if path is None:
        folder = first.parent
        present = sorted(p.name for p in folder.glob("*.raw")) if folder.is_dir() else []
        raise FerError(
            f"{first}: missing ({context + '; ' if context else ''}files there: {', '.join(present) or 'none'})"
        )
    data = np.fromfile(path, dtype=RAW_DTYPE)
    if size is not None and data.size != size:
        raise FerError(f"{path}: holds {data.size * 4} bytes, expected {size * 4} ({size} float32 values)")
    return data.astype(np.float32, copy=False)


def default_work_dir() -> Path:
    """tmpfs for per-frame tensor files: systemd's RuntimeDirectory, then XDG, then /dev/shm."""
    for var in ("RUNTIME_DIRECTORY", "XDG_RUNTIME_DIR"):
        val = os.environ.get(var)
        if val:
            first = val.split(":")[0]
            if os.path.isdir(first):
                return Path(first) / "fer-agent"
    if os.path.isdir("/dev/shm"):
        return Path("/dev/shm") / f"fer-agent-{os.getuid()}"
    return Path("/tmp") / f"fer-agent-{os.getuid()}"
