"""QNN HTP through ONNX Runtime: the contract the host tools and the board share.

Two halves:

1. :data:`SOCS`, one table from SoC name to what the QNN HTP backend needs
   (``htp_arch``, ``soc_model``) and to the Linux ``/sys/devices/soc0/soc_id``
   values by which a board recognises itself (:func:`detect_soc`).
2. The ONNX Runtime plumbing: :func:`register_qnn` (Qualcomm's plugin EP from
   the ``onnxruntime-qnn`` wheel), :func:`qnn_session` (an InferenceSession on
   the HTP device, CPU fallback off by default so an op the HTP cannot take is
   an error naming the op, never a silent CPU run), :func:`compile_context`
   (an EPContext model + QNN context binary for one SoC), :func:`qnn_version`
   and :func:`htp_is_simulated`.

``onnxruntime`` is imported lazily: importing this module never fails, and a
missing package is one :class:`QnnError` line saying what to install.

Sources of the table (see docs/qnn.md):

- ``soc_model`` and ``htp_arch``: the SoC list inside ``libQnnHtp.so`` of
  onnxruntime-qnn 2.7.0 (QAIRT/QNN 2.51). A context binary compiled with
  ``soc_model=N`` records ``soc_type=<name>;arch=<v>;vtcm_size=<bytes>``;
  every row below was read back that way (``tests/host/test_qnn_host.py`` re-checks
  two). The same numbers appear in the QAIRT SDK's "Supported Snapdragon
  devices" table that the ONNX Runtime QNN EP documentation points to for
  ``soc_model``, and in ExecuTorch's Qualcomm backend
  (``backends/qualcomm/serialization/qc_schema.py``) for the SoCs it lists.
- ``soc_ids``: Linux ``include/dt-bindings/arm/qcom,ids.h`` (the socinfo
  driver exports them as ``/sys/devices/soc0/soc_id``).
"""

from __future__ import annotations

import contextlib
import os
import platform
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.contracts.errors import FerError

EP_NAME = "QNNExecutionProvider"
INSTALL_HINT = ("pip install 'fer-agent[qnn]' (onnxruntime>=1.24.2 and onnxruntime-qnn>=2.7, Python >= 3.11; "
                "x86_64 runs the HTP simulator, aarch64 boards the NPU)")
SOC_SYSFS = Path("/sys/devices/soc0")


class QnnError(FerError):
    """onnxruntime-qnn missing, a model the HTP rejects, a context that does not compile or load."""


@dataclass(frozen=True)
class Soc:
    """One SoC as the QNN HTP backend knows it."""

    name: str  # lower-case key: "qcs6490"
    soc_model: int  # QNN ``soc_model`` provider option
    htp_arch: int  # Hexagon HTP version: 68 = v68
    vtcm_mb: int  # HTP tightly-coupled memory the SDK assumes
    soc_ids: tuple[int, ...]  # /sys/devices/soc0/soc_id values (Linux socinfo)
    product: str

    def provider_options(self) -> dict[str, str]:
        return {"htp_arch": str(self.htp_arch), "soc_model": str(self.soc_model)}


def _soc(name: str, soc_model: int, arch: int, vtcm: int, ids: tuple[int, ...], product: str) -> Soc:
    return Soc(name, soc_model, arch, vtcm, ids, product)


#: name -> Soc. Keep the rows sorted by name; docs/qnn.md shows the same table.
SOCS: dict[str, Soc] = {s.name: s for s in (
    _soc("qcs6490", 93, 68, 2, (498, 497), "Dragonwing QCS6490 / QCM6490 (RB3 Gen 2, Rubik Pi 3)"),
    _soc("qcs8300", 82, 75, 8, (674,), "Dragonwing QCS8300 (IQ8)"),
    _soc("qcs8550", 66, 73, 8, (603, 604), "Dragonwing QCS8550 / QCM8550"),
    # libQnnHtp 2.51 has no soc_model of its own for QCS9075: it is QCS9100 silicon (IQ9, "lemans").
    _soc("qcs9075", 77, 73, 8, (676,), "Dragonwing QCS9075 (IQ9; compiled as QCS9100)"),
    _soc("qcs9100", 77, 73, 8, (667,), "Dragonwing QCS9100 (IQ9)"),
    _soc("sa8255", 52, 73, 8, (532,), "SA8255P (automotive)"),
    _soc("sa8295", 39, 68, 8, (460,), "SA8295P (automotive)"),
    _soc("sa8540", 62, 68, 8, (461,), "SA8540P (automotive)"),
    _soc("sc8380xp", 60, 73, 8, (555,), "Snapdragon X Elite (X1E80100)"),
    _soc("sm8350", 30, 68, 4, (439,), "Snapdragon 888"),
    _soc("sm8450", 36, 69, 8, (457, 480, 482), "Snapdragon 8 Gen 1"),
    _soc("sm8550", 43, 73, 8, (519,), "Snapdragon 8 Gen 2"),
    _soc("sm8650", 57, 75, 8, (557,), "Snapdragon 8 Gen 3"),
    _soc("sm8750", 69, 79, 8, (618,), "Snapdragon 8 Elite"),
    _soc("sm8850", 87, 81, 8, (660,), "Snapdragon 8 Elite Gen 5"),
)}


def soc(name: str) -> Soc:
    """The table row for ``name`` (case-insensitive); the error lists the names it knows."""
    key = name.strip().lower()
    if key not in SOCS:
        raise QnnError(f"unknown SoC {name!r}: known SoCs are {', '.join(SOCS)} (agent/contracts/qnn.py)")
    return SOCS[key]


def parse_socs(text: str) -> list[Soc]:
    """``"qcs6490,sm8650"`` -> rows, in order, without repeats."""
    names = [n for n in (p.strip() for p in text.split(",")) if n]
    if not names:
        raise QnnError(f"no SoC named in {text!r}: give a comma-separated list such as qcs6490,sm8650")
    return list({s.name: s for s in map(soc, names)}.values())


def soc_from_id(soc_id: int) -> Soc | None:
    """The row whose Linux socinfo id is ``soc_id`` (first match), else None."""
    return next((s for s in SOCS.values() if soc_id in s.soc_ids), None)


def detect_soc(sysfs: str | Path = SOC_SYSFS) -> Soc | None:
    """This board's SoC from ``<sysfs>/soc_id`` (or its ``machine`` name); None when unknown or not a Qualcomm board."""
    root = Path(sysfs)
    try:
        found = soc_from_id(int((root / "soc_id").read_text().strip()))
    except (OSError, ValueError):
        found = None
    if found is None:
        try:
            found = SOCS.get((root / "machine").read_text().strip().lower())
        except OSError:
            pass
    return found


def htp_is_simulated() -> bool:
    """True on x86_64: there libQnnHtp.so runs the Hexagon HTP in simulation (timings are not NPU timings)."""
    return platform.machine().lower() in ("x86_64", "amd64")


def _modules() -> tuple[Any, Any]:
    try:
        import onnxruntime as ort
        import onnxruntime_qnn
    except ImportError as exc:
        raise QnnError(f"the QNN runtime needs onnxruntime and onnxruntime-qnn ({exc.name or exc} is not installed): "
                       f"{INSTALL_HINT}") from None
    return ort, onnxruntime_qnn


def qnn_available() -> bool:
    try:
        _modules()
    except QnnError:
        return False
    return True


def qnn_version() -> str:
    """QNN SDK version of the installed onnxruntime-qnn wheel, e.g. ``2.51.0``."""
    _, oq = _modules()
    return str(getattr(oq.build_and_package_info, "qnn_version", "unknown"))


def versions() -> dict[str, str]:
    """What produced a context binary: for the manifest."""
    ort, oq = _modules()
    return {"qnn_version": qnn_version(), "onnxruntime_qnn": str(oq.__version__), "onnxruntime": str(ort.__version__)}


_registered = False


def register_qnn() -> list[Any]:
    """Register Qualcomm's QNN plugin EP with ONNX Runtime (once per process); returns its OrtEpDevices."""
    global _registered
    ort, oq = _modules()
    if not htp_is_simulated():
        _point_dsp_loader_at(Path(oq.get_qnn_htp_path()).parent)
    if not _registered and not any(d.ep_name == EP_NAME for d in ort.get_ep_devices()):
        try:
            ort.register_execution_provider_library(EP_NAME, oq.get_library_path())
        except Exception as exc:  # e.g. an onnxruntime older than the plugin needs
            raise QnnError(f"{oq.get_library_path()}: cannot register {EP_NAME} with onnxruntime {ort.__version__}: "
                           f"{_last_line(exc)}") from None
    _registered = True
    devices = [d for d in ort.get_ep_devices() if d.ep_name == EP_NAME]
    if not devices:
        raise QnnError(f"{EP_NAME} registered but offers no device (onnxruntime {ort.__version__})")
    return devices


def _point_dsp_loader_at(lib_dir: Path) -> None:
    """Put the wheel's HTP skel libraries on ``ADSP_LIBRARY_PATH`` (';'-separated) for the board's DSP loader.

    The aarch64 wheel ships ``libQnnHtpV<arch>Skel.so`` next to libQnnHtp.so; FastRPC loads the skel for the
    board's HTP from the directories in ``ADSP_LIBRARY_PATH`` (Qualcomm's DSP runtime docs), then from the
    system's ``/usr/lib/rfsa/adsp``, ``/usr/lib/dsp`` and ``/dsp``. A path the environment already gives comes first.
    """
    if not any(lib_dir.glob("libQnnHtpV*Skel.so")):
        return
    parts = [p for p in os.environ.get("ADSP_LIBRARY_PATH", "").split(";") if p]
    if str(lib_dir) not in parts:
        parts.append(str(lib_dir))
    for system in ("/usr/lib/rfsa/adsp", "/usr/lib/dsp", "/dsp"):
        if system not in parts:
            parts.append(system)
    os.environ["ADSP_LIBRARY_PATH"] = ";".join(parts)


def htp_backend_path() -> str:
    return str(_modules()[1].get_qnn_htp_path())


def qnn_session(model_path: str | Path, provider_options: dict[str, str] | None = None, cpu_fallback: bool = False,
                session_config: dict[str, str] | None = None, log_severity: int = 4, threads: int | None = None) -> Any:
    """An ``onnxruntime.InferenceSession`` for ``model_path`` on the QNN HTP backend.

    With ``cpu_fallback=False`` (the default) a node the HTP rejects fails the
    session; the :class:`QnnError` names the model file and the rejected ops.
    On the x86_64 simulator, do not go back to running a session after
    loading one prepared for another target (a context binary) in the same
    process: the simulator serves the last one.
    ``provider_options`` go to the QNN EP (``htp_arch``, ``soc_model``,
    ``htp_performance_mode``...); ``backend_path`` defaults to the wheel's
    libQnnHtp.so. ``session_config`` entries go to the SessionOptions
    (``ep.context_enable``...).
    """
    ort, _ = _modules()
    path = Path(model_path)
    if not path.is_file():
        raise QnnError(f"{path}: model file does not exist")
    opts = {"backend_path": htp_backend_path(), **(provider_options or {})}
    so = _session_options(opts, cpu_fallback, session_config, log_severity, threads)
    try:
        with _stdout_to_stderr():
            sess = ort.InferenceSession(str(path), so)
    except Exception as exc:
        raise _explain(path, exc, opts, session_config) from None
    sess.disable_fallback()  # a failed run is an error, not a silent retry on the CPU EP
    return sess


@contextlib.contextmanager
def _stdout_to_stderr():
    """libQnnHtp prints a '# LIBNATIVE: ...' banner on file descriptor 1 when it loads: keep stdout for results."""
    sys.stdout.flush()
    try:
        saved = os.dup(1)
    except OSError:  # no file descriptor 1 (embedded interpreters)
        yield
        return
    try:
        os.dup2(2, 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def _session_options(opts: dict[str, str], cpu_fallback: bool, config: dict[str, str] | None, log_severity: int,
                     threads: int | None) -> Any:
    ort, _ = _modules()
    so = ort.SessionOptions()
    so.log_severity_level = log_severity
    if threads:
        so.intra_op_num_threads = threads
    if not cpu_fallback:
        so.add_session_config_entry("session.disable_cpu_ep_fallback", "1")
    for key, value in (config or {}).items():
        so.add_session_config_entry(key, str(value))
    so.add_provider_for_devices(register_qnn(), {k: str(v) for k, v in opts.items()})
    return so


def rejected_nodes(model_path: str | Path, provider_options: dict[str, str] | None = None) -> list[tuple[str, str]]:
    """(op_type, node name) of every node ONNX Runtime would not give to the QNN EP for this model."""
    ort, _ = _modules()
    opts = {"backend_path": htp_backend_path(), **(provider_options or {}),
            "offload_graph_io_quantization": "0"}  # else graph-input Q/DQ go to the CPU on purpose
    so = _session_options(opts, True, {"session.record_ep_graph_assignment_info": "1"}, 4, None)
    with _stdout_to_stderr():
        sess = ort.InferenceSession(str(model_path), so)
    return [(n.op_type, n.name) for sub in sess.get_provider_graph_assignment_info() if sub.ep_name != EP_NAME
            for n in sub.get_nodes()]


def _explain(path: Path, exc: Exception, opts: dict[str, str], config: dict[str, str] | None) -> QnnError:
    msg = _last_line(exc)
    if "fallback to CPU EP has been explicitly disabled" in msg:
        try:
            nodes = rejected_nodes(path, {k: v for k, v in opts.items() if k != "backend_path"})
        except Exception:  # the diagnosis must not hide the first error
            nodes = []
        if nodes:
            listed = ", ".join(f"{op} (node {name!r})" for op, name in nodes[:8])
            more = f" and {len(nodes) - 8} more" if len(nodes) > 8 else ""
            return QnnError(f"{path}: the QNN HTP backend cannot run op {listed}{more}; CPU fallback is off "
                            "(change the model, or allow cpu_fallback to run those ops on the CPU)")
        return QnnError(f"{path}: the QNN HTP backend did not take the whole graph and CPU fallback is off: {msg}")
    if (config or {}).get("ep.context_enable") == "1":
        return QnnError(f"{path}: QNN context compilation failed: {msg}")
    return QnnError(f"{path}: QNN HTP session failed: {msg}")


def _last_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return re.sub(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ", "", text) or type(exc).__name__


@dataclass(frozen=True)
class Context:
    """A compiled QNN context: the EPContext ONNX model, the binary it points to, for one SoC."""

    onnx: Path
    bin: Path
    soc: Soc
    seconds: float
    versions: dict[str, str]


def compile_context(model_path: str | Path, out_dir: str | Path, target: Soc | str, name: str = "model",
                    provider_options: dict[str, str] | None = None) -> Context:
    """Compile ``model_path`` (a QDQ ONNX model) for ``target`` into ``out_dir``.

    Writes ``<name>_ctx.onnx`` (one EPContext node) and the QNN context binary
    it names (``<name>_ctx_qnn.bin``, kept beside it, not embedded). Existing
    outputs of the same name are replaced. Every op must go to the HTP.
    """
    target = soc(target) if isinstance(target, str) else target
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ctx = out / f"{name}_ctx.onnx"
    for old in [ctx, *out.glob(f"{name}_ctx*.bin")]:
        old.unlink(missing_ok=True)
    before = set(out.iterdir())
    start = time.perf_counter()
    qnn_session(model_path, {**target.provider_options(), **(provider_options or {})},
                session_config={"ep.context_enable": "1", "ep.context_file_path": str(ctx),
                                "ep.context_embed_mode": "0"})
    seconds = time.perf_counter() - start
    bins = sorted(p for p in set(out.iterdir()) - before if p.suffix == ".bin")
    if not ctx.is_file() or len(bins) != 1:
        made = ", ".join(p.name for p in sorted(set(out.iterdir()) - before)) or "nothing"
        raise QnnError(f"{model_path}: compiling for {target.name} wrote {made}, expected {ctx.name} and one .bin")
    return Context(ctx, bins[0], target, seconds, versions())


def context_target(bin_path: str | Path) -> dict[str, Any]:
    """What a context binary says it was prepared for: ``{"soc_type": "QCS6490", "htp_arch": 68, "vtcm_mb": 2}``.

    Read from the HTP prepare record the binary carries (not a documented
    format: an empty dict when it is not found).
    """
    data = Path(bin_path).read_bytes()
    found = re.search(rb"soc_type=([A-Za-z0-9_]+);arch=(\d+);", data)
    if not found:
        return {}
    vtcm = re.search(rb"vtcm_size=(\d+);", data[found.end():])
    info: dict[str, Any] = {"soc_type": found.group(1).decode(), "htp_arch": int(found.group(2))}
    if vtcm:
        info["vtcm_mb"] = int(vtcm.group(1)) // (1 << 20)
    return info

