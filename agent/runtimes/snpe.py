"""snpe-net-run runtime (Qualcomm SNPE inside the QAIRT SDK).

The SDK has no Python wheel for boards and its C API needs a native build, so
this runtime drives the SDK's own ``snpe-net-run``: per frame, all inputs go
into one input list and ONE process call, whose ``Result_<n>/<output>.raw``
files are read back in input-list order. A process per frame costs the DLC
load and the DSP session every time; the in-process ``qnn`` runtime is the
one that keeps up with a camera. :class:`SnpeNetRun` is the only code that
knows about processes and files. See ``docs/snpe.md``.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import shutil
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from agent.configio import check
from agent.contracts.errors import ConfigError, FerError
from agent.contracts.rawtensor import default_work_dir, format_input_list, read_result, write_raw
from agent.contracts.snpe_sdk import find_tool, sdk_root_of, sdk_version_in
from agent.runtimes.base import BundleModel, InferenceError, Runtime
from agent.runtimes.fallback import fallback_after_field, fallback_field

log = logging.getLogger(__name__)

Target = Literal["cpu", "gpu", "dsp", "aip"]
PerfProfile = Literal[
    "",
    "balanced",
    "default",
    "high_performance",
    "sustained_high_performance",
    "burst",
    "power_saver",
    "low_power_saver",
    "high_power_saver",
    "extreme_power_saver",
    "low_balanced",
    "system_settings",
]
UserBuffer = Literal["", "float", "tf8", "auto"]
DlcRole = Literal["auto", "dlc", "dlc_quantized", "dlc_htp"]
OutputHeader = Literal["none", "layer", "tensor"]
# snpe-net-run reads an optional first input-list line: '#' + layer names or '%' + output tensor names.
HEADER_MARKS = {"none": "", "layer": "#", "tensor": "%"}
# snpe-net-run selects the target with one flag; CPU is its default and has no flag.
TARGET_FLAGS: dict[str, tuple[str, ...]] = {
    "cpu": (),
    "gpu": ("--use_gpu",),
    "dsp": ("--use_dsp",),
    "aip": ("--use_aip",),
}


@dataclass
class SnpeConfig:
    target: Target = field(
        default="dsp",
        metadata={
            "doc": "where snpe-net-run runs the model: cpu (no flag), gpu (--use_gpu), dsp (--use_dsp, HTP/Hexagon), "
            "aip (--use_aip)"
        },
    )
    perf_profile: PerfProfile = field(
        default="burst", metadata={"doc": "--perf_profile value; empty = leave it to the SDK"}
    )
    userbuffer: UserBuffer = field(
        default="",
        metadata={"doc": "adds --userbuffer_<mode>; empty = ITensor (the tool's default); tf8 needs a quantized DLC"},
    )
    output_header: OutputHeader = field(
        default="none",
        metadata={
            "doc": "first input-list line: none = the tool saves every network output; layer = '#<output>'; "
            "tensor = '%<output>' (SNPE 2)"
        },
    )
    timeout_s: float = field(
        default=5.0,
        metadata={
            "doc": "per snpe-net-run call; a call that takes longer is killed and the frame counts as failed",
            "min": 0.001,
        },
    )
    dlc_role: DlcRole = field(
        default="auto",
        metadata={
            "doc": "bundle DLC to run; auto = dsp: dlc_htp if present else dlc_quantized, aip: dlc_quantized, "
            "cpu/gpu: dlc"
        },
    )
    snpe_net_run: str | None = field(
        default=None,
        metadata={
            "doc": "path to snpe-net-run; empty = $SNPE_NET_RUN, then sdk_root/$SNPE_ROOT/$QAIRT_SDK_ROOT "
            "bin/<arch>/, then PATH"
        },
    )
    sdk_root: str | None = field(
        default=None,
        metadata={"doc": "SDK root (as $SNPE_ROOT); its lib/<arch> dir is added to LD_LIBRARY_PATH automatically"},
    )
    ld_library_path: list[str] = field(
        default_factory=list,
        metadata={"doc": "dirs prepended to LD_LIBRARY_PATH for snpe-net-run (SDK lib/<arch>, vendor libs)"},
    )
    adsp_library_path: list[str] = field(
        default_factory=list,
        metadata={
            "doc": "dirs prepended to ADSP_LIBRARY_PATH (';'-separated): DSP skel libs, "
            "e.g. <sdk>/lib/hexagon-v73/unsigned, /usr/lib/rfsa/adsp, /dsp"
        },
    )
    env: dict[str, str] = field(default_factory=dict, metadata={"doc": "extra environment variables for snpe-net-run"})
    extra_args: list[str] = field(
        default_factory=list,
        metadata={"doc": "extra snpe-net-run arguments, appended as given (e.g. --enable_cpu_fallback)"},
    )
    work_dir: str | None = field(
        default=None,
        metadata={"doc": "tmpfs dir for per-frame raw files; empty = $RUNTIME_DIRECTORY, $XDG_RUNTIME_DIR or /dev/shm"},
    )
    keep_files: bool = field(
        default=False, metadata={"doc": "keep the last frame's inputs/outputs in work_dir (debugging)"}
    )
    fallback: str = fallback_field()
    fallback_after: int = fallback_after_field()

    @staticmethod
    def renamed_keys() -> dict[str, str]:
        """Keys of earlier releases, still read for one more (see :mod:`agent.configio`)."""
        return {"runtime": "target"}

    def validate(self) -> None:
        """Check fields set in code (benchmarks, tests) against their metadata, as loading a file does;
        ConfigError names ``backend.snpe.<key>``."""
        check(self, "backend.snpe")


# --------------------------------------------------------------------------- bundle helpers


def dlc_kind_for(model: BundleModel, cfg: SnpeConfig) -> str:
    """Which DLC a target should run: quantized for the DSP/AIP, float for CPU/GPU."""
    if cfg.dlc_role != "auto":
        return cfg.dlc_role
    if cfg.target == "dsp":
        return "dlc_htp" if model.has("dlc_htp") else "dlc_quantized"
    if cfg.target == "aip":
        return "dlc_quantized"
    return "dlc"


# --------------------------------------------------------------------------- the subprocess runner


@dataclass
class CallResult:
    """What one snpe-net-run call cost, for stats and benchmarks."""

    seconds: float
    inferences: int


class SnpeNetRun:
    """Run a DLC with snpe-net-run: a batch of inferences per process call.

    The public surface (:meth:`run`, :meth:`close`) is what an in-process
    runtime would implement too.
    """

    def __init__(
        self,
        dlc: Path,
        input_names: list[str],
        output_names: list[str],
        cfg: SnpeConfig,
        output_shapes: dict[str, tuple[int, ...]] | None = None,
    ) -> None:
        cfg.validate()
        self.cfg = cfg
        self.dlc = Path(dlc).resolve()  # the tool runs in the work dir
        self.input_names = list(input_names)
        self.output_names = list(output_names)
        self.output_shapes = output_shapes or {}
        tool, searched = find_tool("snpe-net-run", cfg.sdk_root, cfg.snpe_net_run)
        if tool is None:
            raise InferenceError(
                f"snpe-net-run not found (searched {'; '.join(searched)}); set backend.snpe.snpe_net_run or $SNPE_ROOT"
            )
        self.tool = tool
        self.env = self._environment()
        base = Path(cfg.work_dir) if cfg.work_dir else default_work_dir()
        self.work = base / f"snpe-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            (self.work / "in").mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InferenceError(f"{self.work}: cannot create the snpe work dir: {exc.strerror}") from None
        self.input_list = self.work / "input_list.txt"
        self.output_dir = self.work / "out"
        self.last_call: CallResult | None = None

    def command(self) -> list[str]:
        """The exact argv of one call (also printed in errors and docs)."""
        cmd = [
            str(self.tool),
            "--container",
            str(self.dlc),
            "--input_list",
            str(self.input_list),
            "--output_dir",
            str(self.output_dir),
            *TARGET_FLAGS[self.cfg.target],
        ]
        if self.cfg.perf_profile:
            cmd += ["--perf_profile", self.cfg.perf_profile]
        if self.cfg.userbuffer:
            cmd.append(f"--userbuffer_{self.cfg.userbuffer}")
        cmd += list(self.cfg.extra_args)
        return cmd

    def _environment(self) -> dict[str, str]:
        env = dict(os.environ)
        ld = list(self.cfg.ld_library_path)
        root = Path(self.cfg.sdk_root) if self.cfg.sdk_root else sdk_root_of(self.tool)
        if root is not None:
            arch = self.tool.parent.name
            if (root / "lib" / arch).is_dir() and str(root / "lib" / arch) not in ld:
                ld.append(str(root / "lib" / arch))
        if ld:
            env["LD_LIBRARY_PATH"] = ":".join(ld + ([env["LD_LIBRARY_PATH"]] if env.get("LD_LIBRARY_PATH") else []))
        if self.cfg.adsp_library_path:
            # The DSP loader separates ADSP_LIBRARY_PATH with ';', unlike LD_LIBRARY_PATH.
            rest = [env["ADSP_LIBRARY_PATH"]] if env.get("ADSP_LIBRARY_PATH") else []
            env["ADSP_LIBRARY_PATH"] = ";".join(list(self.cfg.adsp_library_path) + rest)
        env.update({str(k): str(v) for k, v in self.cfg.env.items()})
        return env

    def run(self, batch: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
        """One process call for the whole batch; outputs in input order."""
        if not batch:
            return []
        try:
            self._write_inputs(batch)
        except OSError as exc:  # tmpfs full, work dir removed under us...
            raise InferenceError(f"{self.work}: cannot write the input tensors: {exc.strerror or exc}") from None
        cmd = self.command()
        t0 = time.perf_counter()
        self._call(cmd)
        results = [{name: self._read_output(i, name, cmd) for name in self.output_names} for i in range(len(batch))]
        self.last_call = CallResult(time.perf_counter() - t0, len(batch))
        if not self.cfg.keep_files:
            self._clear_outputs()
        return results

    def _write_inputs(self, batch: list[dict[str, np.ndarray]]) -> None:
        self._clear_outputs()
        indir = self.work / "in"
        indir.mkdir(parents=True, exist_ok=True)
        lines: list[str | dict[str, str]] = []
        for i, inputs in enumerate(batch):
            paths: dict[str, str] = {}
            for name in self.input_names:
                if name not in inputs:
                    raise InferenceError(f"inference {i}: input {name!r} missing (have {', '.join(inputs)})")
                paths[name] = str(write_raw(indir / f"{i}_{_safe(name)}.raw", inputs[name]))
            lines.append(paths if len(self.input_names) > 1 else next(iter(paths.values())))
        mark = HEADER_MARKS[self.cfg.output_header]
        self.input_list.write_text(format_input_list(lines, self.output_names if mark else None, mark or "#"))

    def _call(self, cmd: list[str]) -> None:
        log.debug("running %s", shlex.join(cmd))
        try:
            proc = subprocess.Popen(
                cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=self.env, cwd=self.work, start_new_session=True
            )
        except OSError as exc:
            raise InferenceError(f"cannot start {shlex.join(cmd)}: {exc.strerror}") from None
        try:
            out, err = proc.communicate(timeout=self.cfg.timeout_s)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            out, err = proc.communicate()
            raise InferenceError(
                f"snpe-net-run timed out after {self.cfg.timeout_s:g} s and was killed: {shlex.join(cmd)}"
                f"{_tail(err or out)}"
            ) from None
        if proc.returncode != 0:
            raise InferenceError(
                f"snpe-net-run exited with code {proc.returncode}: {shlex.join(cmd)}{_tail(err or out)}"
            )

    def _read_output(self, index: int, name: str, cmd: list[str]) -> np.ndarray:
        shape = self.output_shapes.get(name)
        try:
            data = read_result(
                self.output_dir,
                index,
                name,
                int(np.prod(shape)) if shape is not None else None,
                context="written by snpe-net-run",
            )
        except FerError as exc:
            raise InferenceError(f"{exc}: {shlex.join(cmd)}") from None
        return data.reshape(shape) if shape is not None else data

    def _clear_outputs(self) -> None:
        # Stale Result_<n> from an earlier frame must never be read as this frame's answer.
        shutil.rmtree(self.output_dir, ignore_errors=True)
        for f in (self.work / "in").glob("*.raw"):
            f.unlink(missing_ok=True)

    def close(self) -> None:
        if not self.cfg.keep_files:
            shutil.rmtree(self.work, ignore_errors=True)


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()


def _tail(stream: bytes | None, lines: int = 8) -> str:
    text = (stream or b"").decode(errors="replace").strip()
    if not text:
        return " (no output on stderr)"
    return "\n  stderr: " + "\n  stderr: ".join(text.splitlines()[-lines:])


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


# --------------------------------------------------------------------------- the runtime


class SnpeRuntime(Runtime):
    """A bundle model on snpe-net-run: a batch ``[N, ...]`` goes through one process call."""

    name = "snpe"
    config_class = SnpeConfig
    summary = "snpe-net-run from the SNPE/QAIRT SDK, a process per frame (DLC files)"
    auto_priority = 20

    @classmethod
    def unavailable(cls, model: BundleModel, config: SnpeConfig) -> str | None:
        try:
            config.validate()
        except FerError as exc:
            return str(exc)
        tool, searched = find_tool("snpe-net-run", config.sdk_root, config.snpe_net_run)
        if tool is None:
            return (
                f"snpe-net-run not found (searched {'; '.join(searched)}); "
                "install the SNPE/QAIRT SDK or set backend.snpe.snpe_net_run"
            )
        role = model.role(dlc_kind_for(model, config))
        if role not in model.manifest.files:
            return f"bundle has no {role!r} file for target {config.target} (run `fer-host convert` on the host)"
        if not model.manifest.path_of(role).exists():
            return f"{model.manifest.path_of(role)}: {role} file listed in the manifest does not exist"
        return None

    def __init__(self, model: BundleModel, config: SnpeConfig | None = None, state_dir: Path | None = None) -> None:
        super().__init__(model, config, state_dir)
        cfg: SnpeConfig = self.config
        cfg.validate()
        manifest = model.manifest
        self.role = model.role(dlc_kind_for(model, cfg))
        if self.role not in manifest.files:
            raise InferenceError(
                f"bundle {manifest.root} has no {self.role!r} file for target {cfg.target}; "
                "run `fer-host convert` on the host (see docs/snpe.md)"
            )
        dlc = self.path = manifest.path_of(self.role)
        if not dlc.exists():
            raise InferenceError(f"{dlc}: {self.role} file listed in the manifest does not exist")
        if cfg.userbuffer == "tf8" and self.role == model.role("dlc"):
            raise ConfigError("backend.snpe.userbuffer: tf8 needs a quantized DLC (dlc_role dlc_quantized or dlc_htp)")
        extra = manifest.files[self.role].extra
        self.input_name, output_name = manifest.tensor_names(self.role)
        self.output_names = [str(n) for n in extra.get("output_names") or [output_name]]
        sizes = {output_name: (len(manifest.labels),)} if model.key == "classifier" else {}
        self.runner = SnpeNetRun(dlc, [self.input_name], self.output_names, cfg, output_shapes=sizes)
        self.calls = 0

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        batch = np.asarray(batch, dtype=np.float32)
        if len(batch) == 0:
            return [np.zeros((0, 0), np.float32) for _ in self.output_names]
        results = self.runner.run([{self.input_name: item[None]} for item in batch])
        self.calls += 1
        return [np.stack([r[name].reshape(-1) for r in results]) for name in self.output_names]

    def describe(self) -> str:
        c: SnpeConfig = self.config
        extra = f", perf {c.perf_profile}" if c.perf_profile else ""
        extra += f", userbuffer {c.userbuffer}" if c.userbuffer else ""
        version = sdk_version_in(Path(c.sdk_root) if c.sdk_root else sdk_root_of(self.runner.tool))
        sdk = f", SDK {version}" if version else ""
        return f"snpe ({c.target}{extra}, {self.model.manifest.files[self.role].path}{sdk}, {self.runner.tool})"

    def close(self) -> None:
        self.runner.close()
