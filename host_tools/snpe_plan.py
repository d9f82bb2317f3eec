"""Which SNPE tool commands turn a bundle into DLCs: the plan ``fer-host convert`` runs or prints.

Pure planning (no tool runs here): the converter for the bundle's source file,
the quantizer, HTP graph preparation per SoC, and the BlazeFace detectors'
float DLCs, each with the exact argv and the file it must produce.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.contracts.errors import FerError
from agent.contracts.litert import load_interpreter
from agent.contracts.manifest import Manifest
from host_tools.snpe_sdk import Sdk

SOURCES = {
    "tensorflow": ("frozen_graph", "snpe-tensorflow-to-dlc"),
    "tflite": ("tflite", "snpe-tflite-to-dlc"),
    "onnx": ("onnx", "snpe-onnx-to-dlc"),
}
QUANTIZERS = ("auto", "snpe-dlc-quant", "snpe-dlc-quantize")
DLC_FILES = {"dlc": "model.dlc", "dlc_quantized": "model_quantized.dlc", "dlc_htp": "model_htp.dlc"}


@dataclass
class Step:
    role: str
    cmd: list[str]
    output: Path
    info: dict[str, Any] = field(default_factory=dict)  # extra keys for the manifest file entry


@dataclass
class Plan:
    steps: list[Step]
    input_name: str
    output_name: str
    calibration: dict[str, Any] | None = None

    def commands(self) -> list[str]:
        return [shlex.join(s.cmd) for s in self.steps]


def tensor_names(manifest: Manifest, source: str, model: Path) -> tuple[str, str]:
    """Input/output names as the source graph spells them (the DLC keeps them)."""
    role = SOURCES[source][0]
    extra = manifest.files[role].extra if role in manifest.files else {}
    if source == "tensorflow":
        return str(extra.get("input_node") or manifest.input.name), str(
            extra.get("output_node") or manifest.output.name
        )
    if source == "tflite":
        if extra.get("input_tensor") and extra.get("output_tensor"):
            return str(extra["input_tensor"]), str(extra["output_tensor"])
        from host_tools.tflite_eval import tensor_names as tflite_names

        return tflite_names(model)
    return str(extra.get("input_name") or manifest.input.name), str(extra.get("output_name") or manifest.output.name)


def build_plan(
    manifest: Manifest,
    bundle: Path,
    tool: Any,
    source: str = "tensorflow",
    model: Path | None = None,
    quantize: bool = True,
    quantizer: str = "snpe-dlc-quantize",
    calibration_list: Path | None = None,
    htp_socs: str | None = None,
    quantizer_args: list[str] | None = None,
) -> Plan:
    """The exact commands; ``tool(name)`` gives each tool's path (or bare name for a dry run)."""
    role, converter = SOURCES[source]
    model = model or manifest.path_of(role)
    in_name, out_name = tensor_names(manifest, source, model)
    dims = ",".join(str(d) for d in manifest.input.shape)
    dlc = bundle / DLC_FILES["dlc"]
    cmd = [
        str(tool(converter)),
        "--input_network",
        str(model),
        "--input_dim",
        in_name,
        dims,
        "--out_node",
        out_name,
        "--output_path",
        str(dlc),
    ]
    common = {"input_name": in_name, "output_name": out_name}
    steps = [Step("dlc", cmd, dlc, {**common, "source": source, "source_file": model.name, "quantized": False})]
    if quantize:
        if calibration_list is None:
            raise FerError(
                "quantising needs calibration faces: pass --data FER2013.csv (or image tree), "
                "--calibration-list FILE, or --no-quantize"
            )
        qdlc = bundle / DLC_FILES["dlc_quantized"]
        steps.append(
            Step(
                "dlc_quantized",
                [
                    str(tool(quantizer)),
                    "--input_dlc",
                    str(dlc),
                    "--input_list",
                    str(calibration_list),
                    "--output_dlc",
                    str(qdlc),
                    *(quantizer_args or []),
                ],
                qdlc,
                {**common, "quantized": True, "quantizer": quantizer},
            )
        )
        if htp_socs:
            hdlc = bundle / DLC_FILES["dlc_htp"]
            steps.append(
                Step(
                    "dlc_htp",
                    [
                        str(tool("snpe-dlc-graph-prepare")),
                        "--input_dlc",
                        str(qdlc),
                        "--output_dlc",
                        str(hdlc),
                        "--htp_socs",
                        htp_socs,
                    ],
                    hdlc,
                    {**common, "quantized": True, "htp_socs": htp_socs.split(",")},
                )
            )
    elif htp_socs:
        raise FerError("--htp-socs needs a quantized DLC: drop --no-quantize")
    return Plan(steps, in_name, out_name)


DETECTOR_ROLES = ("blazeface_short", "blazeface_full")


def detector_steps(manifest: Manifest, bundle: Path, tool: Any) -> list[Step]:
    """Float DLCs of the bundle's BlazeFace models (``<role>_dlc``), for the GPU/CPU runtimes.

    Tensor names and dims are read from each TFLite file; the detector has two
    outputs (box regressors, scores), so each gets its own ``--out_node``.
    Quantising the detector would need face-image calibration and is not done.
    """
    steps = []
    for role in DETECTOR_ROLES:
        if role not in manifest.files:
            continue
        model = manifest.path_of(role)
        manifest.verify([role])
        interp = load_interpreter(model, threads=None)
        (inp,) = interp.get_input_details()
        outs = [d["name"] for d in interp.get_output_details()]
        dlc = model.with_suffix(".dlc")
        cmd = [
            str(tool("snpe-tflite-to-dlc")),
            "--input_network",
            str(model),
            "--input_dim",
            inp["name"],
            ",".join(str(int(d)) for d in inp["shape"]),
        ]
        for name in outs:
            cmd += ["--out_node", name]
        cmd += ["--output_path", str(dlc)]
        steps.append(
            Step(
                f"{role}_dlc",
                cmd,
                dlc,
                {
                    "input_name": inp["name"],
                    "output_names": outs,
                    "input_shape": [int(d) for d in inp["shape"]],
                    "quantized": False,
                },
            )
        )
    if not steps:
        raise FerError(f"{bundle}: --detectors given but the bundle has no {' or '.join(DETECTOR_ROLES)} file")
    return steps


def pick_quantizer(sdk: Sdk | None, choice: str) -> str:
    if choice != "auto":
        return choice
    if sdk is not None and sdk.has("snpe-dlc-quant"):
        return "snpe-dlc-quant"
    return "snpe-dlc-quantize"  # present in every SNPE release
