"""``fer-host convert BUNDLE``: the bundle's model -> SNPE DLCs, recorded in the manifest.

1. ``snpe-tensorflow-to-dlc`` on the frozen graph (default), or
   ``snpe-tflite-to-dlc`` / ``snpe-onnx-to-dlc`` with ``--source``: model.dlc
   (float; the CPU/GPU runtimes).
2. ``snpe-dlc-quant`` (``snpe-dlc-quantize`` on SDKs without it) with N
   Training faces balanced across classes: model_quantized.dlc (DSP/AIP).
3. With ``--htp-socs``: ``snpe-dlc-graph-prepare`` caches the HTP graph for
   those SoCs: model_htp.dlc (what the DSP runtime loads fastest).
4. With ``--detectors``: ``snpe-tflite-to-dlc`` on the BlazeFace models.

Tensor names and dims come from the manifest, never from constants. The
manifest gets each DLC with its sha256 and tensor names, and an ``snpe``
block with the SDK version and the exact commands. ``--dry-run`` prints the
commands and changes nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from agent.contracts.errors import FerError
from agent.contracts.manifest import Manifest, file_entry, load_manifest
from host_tools.snpe_plan import (
    DETECTOR_ROLES,
    DLC_FILES,
    QUANTIZERS,
    SOURCES,
    Plan,
    Step,
    build_plan,
    detector_steps,
    pick_quantizer,
)
from host_tools.snpe_sdk import Sdk, SdkError, find_sdk, run_tool


def _prepare_calibration(
    calib_info: dict[str, Any] | None,
    quantize: bool,
    calibration_list: Path | None,
    data: Path | None,
    manifest: Manifest,
    work_dir: Path | None,
    count: int,
    seed: int,
    echo,
) -> dict[str, Any] | None:
    """Write the class-balanced calibration faces (or check the given list); what the manifest records of it."""
    if calib_info is not None:
        from host_tools import calibration
        from host_tools import data as fer_data

        split = fer_data.load(data).split("Training")
        raws = calibration.make_calibration(split, manifest.input, work_dir, count, seed)
        calib_info.update(per_class=raws.per_class(), bytes_per_file=raws.files[0].stat().st_size)
        echo(f"calibration: {len(raws.files)} faces {raws.per_class()} -> {raws.list_path}")
    elif quantize and calibration_list is not None:
        if not calibration_list.exists():
            raise FerError(f"{calibration_list}: calibration list does not exist")
        lines = calibration_list.read_text().splitlines()
        calib_info = {
            "count": sum(1 for line in lines if line.strip() and not line.startswith("#")),
            "list": str(calibration_list),
        }
    return calib_info


def convert(
    bundle: Path,
    source: str = "tensorflow",
    model: Path | None = None,
    data: Path | None = None,
    calibration_list: Path | None = None,
    calibration_count: int = 200,
    seed: int = 0,
    quantize: bool = True,
    quantizer: str = "auto",
    htp_socs: str | None = None,
    sdk_root: str | None = None,
    dry_run: bool = False,
    work_dir: Path | None = None,
    quantizer_args: list[str] | None = None,
    tool_timeout_s: float | None = None,
    detectors: bool = False,
    echo=print,
) -> Manifest | Plan:
    """Run (or with ``dry_run`` only print) the conversion; returns the updated manifest (or the plan)."""
    bundle = Path(bundle).absolute()  # recorded commands must work from any directory
    manifest = load_manifest(bundle, verify=False)
    role = SOURCES[source][0]
    if model is None:
        manifest.verify([role])  # convert exactly the file the manifest vouches for
    elif not model.exists():
        raise FerError(f"{model}: --model file does not exist")
    else:
        model = model.absolute()
    try:
        sdk: Sdk | None = find_sdk(sdk_root, probe_tool=SOURCES[source][1])
    except SdkError as exc:
        if not dry_run:
            try:  # show what would have run, as far as it can be known without the SDK
                first = build_plan(manifest, bundle, lambda name: name, source, model, quantize=False).commands()[0]
            except FerError:
                raise exc from None
            raise SdkError(f"{exc}\n  first command: {first}") from None
        sdk = None
    tool = sdk.tool if sdk is not None else (lambda name: name)
    q = pick_quantizer(sdk, quantizer)
    if sdk is not None and sdk.root is not None and "stand-in" in _read(sdk.root / "sdk.yaml"):
        echo(
            f"# WARNING: {sdk.root} is the test stand-in SDK: its DLCs are JSON placeholders; "
            "never ship them to a board"
        )

    calib_info: dict[str, Any] | None = None
    temp: Path | None = None
    if quantize and calibration_list is None and data is not None:
        if work_dir is None:  # deterministic, so --dry-run shows the path the real run uses; removed afterwards
            work_dir = temp = Path(tempfile.gettempdir()) / f"fer-snpe-calib-{bundle.resolve().name}"
        calibration_list = work_dir / "calibration_list.txt"
        calib_info = {"count": calibration_count, "seed": seed, "split": "Training", "data": str(data)}
    plan = build_plan(manifest, bundle, tool, source, model, quantize, q, calibration_list, htp_socs, quantizer_args)
    plan.calibration = calib_info
    if detectors:
        plan.steps += detector_steps(manifest, bundle, tool)

    if dry_run:
        echo(f"# {sdk.describe() if sdk else 'SNPE SDK not found: tools shown by name'}")
        if calib_info:
            echo(
                f"# calibration: {calibration_count} Training faces balanced across classes (seed {seed}) "
                f"from {data} -> {calibration_list}"
            )
        for c in plan.commands():
            echo(c)
        return plan

    if temp is not None:
        shutil.rmtree(temp, ignore_errors=True)
    try:
        calib_info = _prepare_calibration(
            calib_info, quantize, calibration_list, data, manifest, work_dir, calibration_count, seed, echo
        )
        done: list[Step] = []
        for step in plan.steps:
            echo(f"$ {shlex.join(step.cmd)}")
            run_tool(step.cmd, timeout_s=tool_timeout_s)
            if not step.output.exists() or step.output.stat().st_size == 0:
                raise FerError(
                    f"{Path(step.cmd[0]).name} exited 0 but wrote no {step.output}\n  command: {shlex.join(step.cmd)}"
                )
            done.append(step)
    finally:
        if temp is not None:
            shutil.rmtree(temp, ignore_errors=True)
    return record(manifest, bundle, done, sdk, plan, source)


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def record(manifest: Manifest, bundle: Path, steps: list[Step], sdk: Sdk | None, plan: Plan, source: str) -> Manifest:
    """New manifest: the DLC entries (sha256, tensor names) and the ``snpe`` block with the exact commands."""
    files = dict(manifest.files)
    made = {s.role for s in steps}
    for role in DLC_FILES:
        if role not in made and role in files:  # a DLC from an earlier conversion no longer matches model.dlc
            (bundle / files[role].path).unlink(missing_ok=True)
            del files[role]
    for s in steps:
        files[s.role] = file_entry(bundle, s.output.relative_to(bundle).as_posix(), **s.info)
    snpe_block = {
        "sdk_version": sdk.version if sdk else None,
        "sdk_root": str(sdk.root) if sdk and sdk.root else None,
        "converted": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "source": source,
        "input_name": plan.input_name,
        "output_name": plan.output_name,
        "commands": [{"role": s.role, "tool": Path(s.cmd[0]).name, "command": shlex.join(s.cmd)} for s in steps],
    }
    if plan.calibration:
        snpe_block["calibration"] = plan.calibration
    new = dataclasses.replace(manifest, files=files, extra={**manifest.extra, "snpe": snpe_block})
    new.write(bundle)
    return load_manifest(bundle, verify=False)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "convert",
        help="bundle -> SNPE DLC (+ quantised, + HTP-prepared), recorded in the manifest",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("bundle", type=Path, help="model bundle directory (manifest.json)")
    p.add_argument(
        "--source",
        choices=sorted(SOURCES),
        default="tensorflow",
        help="which bundle model to convert: tensorflow (frozen_graph, default), tflite, onnx",
    )
    p.add_argument(
        "--model", type=Path, default=None, help="convert this file instead of the bundle's (e.g. an ONNX export)"
    )
    p.add_argument("--data", type=Path, default=None, help="FER2013 CSV or image tree for calibration faces")
    p.add_argument(
        "--calibration-count",
        type=int,
        default=200,
        metavar="N",
        help="calibration faces from Training, balanced across classes (default 200)",
    )
    p.add_argument(
        "--calibration-list", type=Path, default=None, help="an existing calibration input list instead of --data"
    )
    p.add_argument("--seed", type=int, default=0, help="calibration sample seed (default 0)")
    p.add_argument(
        "--work-dir", type=Path, default=None, help="keep calibration tensors here (default: a temp dir, removed)"
    )
    p.add_argument("--no-quantize", dest="quantize", action="store_false", help="float DLC only (CPU/GPU runtimes)")
    p.add_argument(
        "--quantizer",
        choices=QUANTIZERS,
        default="auto",
        help="auto = snpe-dlc-quant when the SDK has it, else snpe-dlc-quantize",
    )
    p.add_argument(
        "--quantizer-arg",
        dest="quantizer_args",
        action="append",
        default=[],
        metavar="ARG",
        help="extra quantizer argument, repeatable (e.g. --quantizer-arg=--use_enhanced_quantizer)",
    )
    p.add_argument(
        "--htp-socs",
        default=None,
        metavar="SOCS",
        help="also run snpe-dlc-graph-prepare for these SoCs (comma-separated, e.g. sm8550,qcs6490)",
    )
    p.add_argument("--sdk-root", default=None, help="SDK root (default $SNPE_ROOT, $QAIRT_SDK_ROOT, then PATH)")
    p.add_argument("--tool-timeout", type=float, default=None, metavar="S", help="give up on a tool after S seconds")
    p.add_argument(
        "--detectors",
        action="store_true",
        help="also convert the bundle's BlazeFace models to float DLCs (roles blazeface_short_dlc, blazeface_full_dlc)",
    )
    p.add_argument("--dry-run", action="store_true", help="print the exact commands; run and change nothing")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.calibration_count <= 0:
        raise FerError(f"--calibration-count must be > 0, got {args.calibration_count}")
    if args.quantize and not args.dry_run and args.data is None and args.calibration_list is None:
        raise FerError(
            "quantising needs calibration faces: pass --data FER2013.csv (or image tree), "
            "--calibration-list FILE, or --no-quantize"
        )
    result = convert(
        args.bundle,
        source=args.source,
        model=args.model,
        data=args.data,
        calibration_list=args.calibration_list,
        calibration_count=args.calibration_count,
        seed=args.seed,
        quantize=args.quantize,
        quantizer=args.quantizer,
        htp_socs=args.htp_socs,
        sdk_root=args.sdk_root,
        dry_run=args.dry_run,
        work_dir=args.work_dir,
        quantizer_args=args.quantizer_args,
        tool_timeout_s=args.tool_timeout,
        detectors=args.detectors,
    )
    if isinstance(result, Manifest):
        for role in [*DLC_FILES, *(f"{r}_dlc" for r in DETECTOR_ROLES)]:
            if role in result.files:
                e = result.files[role]
                print(f"{role}: {args.bundle / e.path} sha256 {e.sha256[:16]}...")
        print(
            f"manifest updated: {args.bundle / 'manifest.json'} "
            f"(snpe.sdk_version {result.extra['snpe']['sdk_version']})"
        )
    return 0
