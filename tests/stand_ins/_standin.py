"""Implementation shared by the SNPE tool stand-ins in this directory.

Each ``snpe-*`` file here is a thin launcher calling :func:`main` with its own
name. The stand-ins follow the command-line and file contracts documented for
the real SDK tools (see README.md here and docs/snpe.md); they are NOT the
Qualcomm tools and produce no real DLC.

A stand-in "DLC" is a small JSON file that records how it was made and which
TFLite model computes the same function, so the snpe-net-run stand-in gives
real numbers.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
import time
from pathlib import Path

VERSION = os.environ.get("SNPE_STAND_IN_VERSION", "2.26.0.240828")
DLC_FORMAT = "fer-snpe-stand-in-dlc"
PERF_PROFILES = (
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
)
TOOLS = (
    "snpe-net-run",
    "snpe-tensorflow-to-dlc",
    "snpe-tflite-to-dlc",
    "snpe-onnx-to-dlc",
    "snpe-dlc-quantize",
    "snpe-dlc-quant",
    "snpe-dlc-graph-prepare",
)


class ToolError(Exception):
    """Printed as the tool's error line; exit code 1 (argparse problems exit 2)."""


# ------------------------------------------------------------------ helpers


def _log_call(tool: str, argv: list[str]) -> None:
    """Append one JSON line per call to $SNPE_STAND_IN_LOG so tests can assert exact command lines."""
    path = os.environ.get("SNPE_STAND_IN_LOG")
    if not path:
        return
    rec = {
        "tool": tool,
        "argv": argv,
        "cwd": os.getcwd(),
        "env": {k: os.environ.get(k) for k in ("LD_LIBRARY_PATH", "ADSP_LIBRARY_PATH")},
    }
    with open(path, "a") as fh:
        fh.write(json.dumps(rec) + "\n")


def _knobs_common() -> None:
    """Failure knobs every tool honours (see README.md)."""
    sleep = os.environ.get("SNPE_STAND_IN_SLEEP")
    if sleep:
        time.sleep(float(sleep))
    fail_file = os.environ.get("SNPE_STAND_IN_FAIL_FILE")
    code = os.environ.get("SNPE_STAND_IN_EXIT")
    if fail_file and Path(fail_file).exists():
        code = code or "1"
    elif fail_file:
        code = None
    if code:
        print(
            "ERROR: stand-in failure requested by SNPE_STAND_IN_EXIT / SNPE_STAND_IN_FAIL_FILE "
            "(simulates e.g. 'Failed to create the DSP runtime')",
            file=sys.stderr,
        )
        sys.exit(int(code))


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def parse_dims(text: str) -> list[int]:
    try:
        dims = [int(d) for d in text.split(",")]
    except ValueError:
        raise ToolError(f"invalid dimensions {text!r}: expected comma-separated integers like 1,48,48,1") from None
    if not dims or any(d <= 0 for d in dims):
        raise ToolError(f"invalid dimensions {text!r}: all must be positive")
    return dims


def read_dlc(path: str | Path) -> dict:
    p = Path(path)
    if not p.is_file():
        raise ToolError(f"Failed to open DLC {p}: no such file")
    try:
        dlc = json.loads(p.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ToolError(f"Failed to open DLC {p}: not a valid DLC container") from None
    if dlc.get("format") != DLC_FORMAT:
        raise ToolError(f"Failed to open DLC {p}: not a valid DLC container")
    return dlc


def write_dlc(path: str | Path, dlc: dict) -> None:
    p = Path(path)
    if not p.parent.is_dir():
        raise ToolError(f"output directory {p.parent} does not exist")
    p.write_text(json.dumps(dlc, indent=1) + "\n")
    print(f"INFO - Saved DLC to {p}", file=sys.stderr)


def tflite_beside(source: Path, quantized: bool) -> Path | None:
    """The TFLite model of the bundle a graph comes from (manifest.json in the same dir)."""
    manifest = source.parent / "manifest.json"
    if not manifest.exists():
        return None
    files = json.loads(manifest.read_text()).get("files", {})
    for role in ("tflite_int8", "tflite") if quantized else ("tflite",):
        if role in files and (source.parent / files[role]["path"]).exists():
            return (source.parent / files[role]["path"]).resolve()
    return None


def _interpreter(path: Path):
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(path))
    interp.allocate_tensors()
    return interp


def _check_unsupported_op() -> None:
    op = os.environ.get("SNPE_STAND_IN_UNSUPPORTED_OP")
    if op:
        raise ToolError(f"Conversion FAILED: Op {op} of type {op} is not supported by the converter")


# ------------------------------------------------------------------ converters


def _converter_parser(tool: str, out_node_required: bool) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=tool, description=f"{tool} stand-in (not the Qualcomm tool)")
    p.add_argument("--input_network", "-i", "--graph", dest="input_network", required=True)
    p.add_argument("--input_dim", "-d", nargs=2, action="append", metavar=("INPUT_NAME", "INPUT_DIM"), default=[])
    p.add_argument("--out_node", "--out_name", action="append", default=[], required=out_node_required)
    p.add_argument("--output_path", "-o", "--dlc", dest="output_path")
    p.add_argument("--quantization_overrides")
    p.add_argument("--allow_unconsumed_nodes", action="store_true")
    p.add_argument("--show_unconsumed_nodes", action="store_true")
    p.add_argument("--debug", nargs="?", const=-1, type=int)
    return p


def convert(tool: str, argv: list[str]) -> None:
    kind = {"snpe-tensorflow-to-dlc": "tensorflow", "snpe-tflite-to-dlc": "tflite", "snpe-onnx-to-dlc": "onnx"}[tool]
    args = _converter_parser(tool, out_node_required=kind == "tensorflow").parse_args(argv)
    src = Path(args.input_network)
    if not src.is_file():
        raise ToolError(f"input_network {src} does not exist")
    want_ext = {"tensorflow": ".pb", "tflite": ".tflite", "onnx": ".onnx"}[kind]
    if src.suffix != want_ext:
        raise ToolError(f"input_network {src} is not a {want_ext} file")
    if kind == "tensorflow" and not args.input_dim:
        raise ToolError("--input_dim INPUT_NAME INPUT_DIM is required for TensorFlow graphs")
    inputs = {name: parse_dims(dims) for name, dims in args.input_dim}
    outputs = list(args.out_node)
    tflite: Path | None
    if kind == "tensorflow":
        graph = src.read_bytes()
        for name in list(inputs) + outputs:
            # A GraphDef stores node names as plain strings: a name absent from the bytes is not a node.
            if name.encode() not in graph:
                raise ToolError(f"node {name!r} not found in graph {src}")
        tflite = tflite_beside(src, quantized=False)
    elif kind == "tflite":
        interp = _interpreter(src)
        tin = {d["name"]: list(d["shape"]) for d in interp.get_input_details()}
        tout = [d["name"] for d in interp.get_output_details()]
        for name, dims in inputs.items():
            if name not in tin:
                raise ToolError(f"input {name!r} not in model (inputs: {', '.join(tin)})")
            if list(dims) != tin[name]:
                raise ToolError(f"input {name!r}: dims {dims} do not match the model's {tin[name]}")
        for name in outputs:
            if name not in tout:
                raise ToolError(f"output {name!r} not in model (outputs: {', '.join(tout)})")
        inputs = inputs or tin
        outputs = outputs or tout
        tflite = src.resolve()
    else:
        tflite = tflite_beside(src, quantized=False)
    _check_unsupported_op()
    out = Path(args.output_path) if args.output_path else src.with_suffix(".dlc")
    write_dlc(
        out,
        {
            "format": DLC_FORMAT,
            "sdk_version": VERSION,
            "converter": tool,
            "source": str(src.resolve()),
            "source_sha256": sha256(src),
            "inputs": inputs,
            "outputs": outputs,
            "quantized": False,
            "tflite": str(tflite) if tflite else None,
        },
    )


# ------------------------------------------------------------------ quantisers and graph prepare


def _read_input_list(path: Path, dlc: dict) -> list[dict[str, str]]:
    if not path.is_file():
        raise ToolError(f"input list {path} does not exist")
    entries: list[dict[str, str]] = []
    names = list(dlc["inputs"])
    for lineno, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        if line.startswith(("#", "%")):
            if entries:
                raise ToolError(f"{path}:{lineno}: output-name line must come first")
            for out in line[1:].split():
                if out not in dlc["outputs"]:
                    raise ToolError(
                        f"{path}:{lineno}: output {out!r} is not in the network (outputs: {', '.join(dlc['outputs'])})"
                    )
            continue
        entry: dict[str, str] = {}
        for tok in line.split():
            if ":=" in tok:
                name, _, p = tok.partition(":=")
                if name not in names:
                    raise ToolError(
                        f"{path}:{lineno}: input {name!r} is not an input of the network (inputs: {', '.join(names)})"
                    )
                entry[name] = p
            else:
                if len(line.split()) != 1 or len(names) != 1:
                    raise ToolError(f"{path}:{lineno}: multi-input networks need name:=path pairs")
                entry[names[0]] = tok
        missing = [n for n in names if n not in entry]
        if missing:
            raise ToolError(f"{path}:{lineno}: no file for input(s) {', '.join(missing)}")
        for name, p in entry.items():
            f = Path(p)
            if not f.is_file():
                raise ToolError(f"{path}:{lineno}: input file {f} does not exist")
            expected = 4
            for d in dlc["inputs"][name]:
                expected *= d
            if f.stat().st_size != expected:
                raise ToolError(f"{path}:{lineno}: {f} holds {f.stat().st_size} bytes, input {name!r} needs {expected}")
        entries.append(entry)
    return entries


def output_names_of(path: Path) -> list[str] | None:
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if line.startswith(("#", "%")):
            return line[1:].split()
        if line:
            return None
    return None


def quantize(tool: str, argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog=tool, description=f"{tool} stand-in (not the Qualcomm tool)")
    p.add_argument("--input_dlc", required=True)
    p.add_argument("--input_list", required=True)
    p.add_argument("--output_dlc")
    p.add_argument("--use_enhanced_quantizer", action="store_true")
    p.add_argument("--use_adjusted_weights_quantizer", action="store_true")
    p.add_argument("--optimizations", action="append", default=[])
    p.add_argument("--override_params", action="store_true")
    p.add_argument("--act_bitwidth", type=int, choices=(8, 16))
    p.add_argument("--weights_bitwidth", type=int, choices=(4, 8))
    p.add_argument("--bias_bitwidth", type=int, choices=(8, 32))
    if tool == "snpe-dlc-quantize":
        p.add_argument("--enable_htp", action="store_true")
        p.add_argument("--htp_socs")
    args = p.parse_args(argv)
    dlc = read_dlc(args.input_dlc)
    if dlc.get("quantized"):
        raise ToolError(f"{args.input_dlc} is already quantized")
    entries = _read_input_list(Path(args.input_list), dlc)
    if not entries:
        raise ToolError(f"input list {args.input_list} lists no inputs")
    src = Path(dlc["source"])
    tflite = tflite_beside(src, quantized=True)
    out = (
        Path(args.output_dlc)
        if args.output_dlc
        else Path(args.input_dlc).with_name(Path(args.input_dlc).stem + "_quantized.dlc")
    )
    q = dict(
        dlc,
        quantized=True,
        quantizer=tool,
        calibration_inputs=len(entries),
        act_bitwidth=args.act_bitwidth or 8,
        weights_bitwidth=args.weights_bitwidth or 8,
        input_dlc_sha256=sha256(Path(args.input_dlc)),
    )
    if tflite:
        q["tflite"] = str(tflite)
    if getattr(args, "htp_socs", None):
        q["htp_socs"] = args.htp_socs.split(",")
    write_dlc(out, q)


def graph_prepare(tool: str, argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog=tool, description=f"{tool} stand-in (not the Qualcomm tool)")
    p.add_argument("--input_dlc", required=True)
    p.add_argument("--output_dlc")
    p.add_argument("--htp_socs")
    p.add_argument("--input_list")
    p.add_argument("--set_output_tensors")
    p.add_argument("--optimization_level", type=int)
    args = p.parse_args(argv)
    dlc = read_dlc(args.input_dlc)
    if not dlc.get("quantized"):
        raise ToolError(f"{args.input_dlc} is not quantized; graph prepare for HTP needs a quantized DLC")
    socs = (args.htp_socs or "sm8550").split(",")
    for soc in socs:
        if not re.fullmatch(r"(sm|qcs|qcm|sa|sxr|ssg|sc|qrb)\d{3,4}[a-z]?", soc):
            raise ToolError(
                f"--htp_socs: {soc!r} is not a SoC identifier like sm8550 or qcs6490 (comma-separated, no spaces)"
            )
    out = (
        Path(args.output_dlc)
        if args.output_dlc
        else Path(args.input_dlc).with_name(Path(args.input_dlc).stem + "_cached.dlc")
    )
    write_dlc(out, dict(dlc, htp_cache=socs, input_dlc_sha256=sha256(Path(args.input_dlc))))


# ------------------------------------------------------------------ snpe-net-run


def net_run(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="snpe-net-run", description="snpe-net-run stand-in (not the Qualcomm tool)")
    p.add_argument("--container", required=True)
    p.add_argument("--input_list", required=True)
    p.add_argument("--output_dir", default="output")
    rt = p.add_mutually_exclusive_group()
    rt.add_argument("--use_gpu", action="store_true")
    rt.add_argument("--use_dsp", action="store_true")
    rt.add_argument("--use_aip", action="store_true")
    rt.add_argument("--use_cpu", action="store_true")
    p.add_argument("--perf_profile", choices=PERF_PROFILES)
    ub = p.add_mutually_exclusive_group()
    ub.add_argument("--userbuffer_float", action="store_true")
    ub.add_argument("--userbuffer_tf8", action="store_true")
    ub.add_argument("--userbuffer_auto", action="store_true")
    p.add_argument("--set_output_tensors")
    p.add_argument("--enable_cpu_fallback", action="store_true")
    p.add_argument("--profiling_level", choices=("off", "basic", "moderate", "detailed", "linting"))
    p.add_argument("--debug", action="store_true")
    args = p.parse_args(argv)
    dlc = read_dlc(args.container)
    if args.userbuffer_tf8 and not dlc.get("quantized"):
        raise ToolError("--userbuffer_tf8 needs a quantized DLC")
    if (args.use_dsp or args.use_aip) and not dlc.get("quantized"):
        print(
            "WARNING: running a non-quantized DLC on the DSP: it is quantized at init (slow, less accurate)",
            file=sys.stderr,
        )
    list_path = Path(args.input_list)
    entries = _read_input_list(list_path, dlc)
    wanted = output_names_of(list_path) or (
        args.set_output_tensors.split(",") if args.set_output_tensors else dlc["outputs"]
    )
    for name in wanted:
        if name not in dlc["outputs"]:
            raise ToolError(f"output {name!r} is not in the network (outputs: {', '.join(dlc['outputs'])})")
    tflite = os.environ.get("SNPE_STAND_IN_TFLITE") or dlc.get("tflite")
    if not tflite or not Path(tflite).is_file():
        raise ToolError(
            f"stand-in cannot compute: no TFLite model recorded in {args.container} (set SNPE_STAND_IN_TFLITE)"
        )
    import numpy as np

    interp = _interpreter(Path(tflite))
    in_details = interp.get_input_details()
    out_details = interp.get_output_details()
    skip = os.environ.get("SNPE_STAND_IN_SKIP")
    short = os.environ.get("SNPE_STAND_IN_SHORT")
    out_dir = Path(args.output_dir)
    input_names = list(dlc["inputs"])
    for n, entry in enumerate(entries):
        for i, name in enumerate(input_names):
            d = in_details[i]
            x = np.fromfile(entry[name], dtype="<f4").reshape(d["shape"])
            if d["dtype"] != np.float32:
                scale, zero = d["quantization"]
                info = np.iinfo(d["dtype"])
                x = np.clip(np.round(x / scale + zero), info.min, info.max).astype(d["dtype"])
            interp.set_tensor(d["index"], x)
        interp.invoke()
        if skip is not None and int(skip) == n:
            continue
        res_dir = out_dir / f"Result_{n}"
        for name in wanted:
            d = out_details[dlc["outputs"].index(name)]
            y = interp.get_tensor(d["index"])
            if d["dtype"] != np.float32:
                scale, zero = d["quantization"]
                y = (y.astype(np.float32) - zero) * scale
            data = np.ascontiguousarray(y, dtype="<f4").tobytes()
            if short is not None and int(short) == n:
                data = data[: len(data) // 2]
            target = res_dir / f"{name}.raw"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)


def main(tool: str) -> None:
    argv = sys.argv[1:]
    if "--version" in argv:
        print(f"SNPE v{VERSION} (stand-in for {tool})")
        return
    _log_call(tool, argv)
    _knobs_common()
    try:
        if tool == "snpe-net-run":
            net_run(argv)
        elif tool.endswith("-to-dlc"):
            convert(tool, argv)
        elif tool in ("snpe-dlc-quantize", "snpe-dlc-quant"):
            quantize(tool, argv)
        elif tool == "snpe-dlc-graph-prepare":
            graph_prepare(tool, argv)
        else:
            raise ToolError(f"unknown stand-in {tool}")
    except ToolError as exc:
        print(f"ERROR - {tool}: {exc}", file=sys.stderr)
        sys.exit(1)
