"""Test helpers for the SNPE path: a tiny bundle copy, a fake SDK, stand-in DLCs.

Imported by the SNPE tests (``tests/*/test_snpe_*.py``); ``tests/conftest.py`` puts this directory on sys.path.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
from fake_sdk import HOST_ARCH, make_fake_sdk, tool_path  # noqa: F401  (re-exported)

HERE = Path(__file__).resolve().parent
TINY_BUNDLE = HERE / "tiny_bundle"
#: Everything that steers the stand-ins or SDK discovery: cleared so nothing from the caller's shell leaks in.
STAND_IN_ENV = (
    "SNPE_ROOT",
    "QAIRT_SDK_ROOT",
    "SNPE_NET_RUN",
    "SNPE_STAND_IN_EXIT",
    "SNPE_STAND_IN_SKIP",
    "SNPE_STAND_IN_SHORT",
    "SNPE_STAND_IN_SLEEP",
    "SNPE_STAND_IN_FAIL_FILE",
    "SNPE_STAND_IN_UNSUPPORTED_OP",
    "LD_LIBRARY_PATH",
    "ADSP_LIBRARY_PATH",
)


def use_fake_sdk(monkeypatch, sdk: Path) -> None:
    """A clean stand-in environment with ``sdk`` on $SNPE_ROOT (pytest's monkeypatch restores it afterwards)."""
    for var in STAND_IN_ENV:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("SNPE_ROOT", str(sdk))


def copy_bundle(dst: Path) -> Path:
    shutil.copytree(TINY_BUNDLE, dst)
    return dst


def add_dlcs(bundle: Path, sdk: Path, htp: bool = True) -> Path:
    """Give ``bundle`` stand-in DLCs (float, quantized, optionally HTP-prepared) and manifest entries.

    Runs the stand-in tools directly, so backend tests do not depend on ``fer-host convert``.
    """

    def run(tool: str, *args: str) -> None:
        subprocess.run([str(tool_path(sdk, tool)), *args], check=True, capture_output=True)

    run(
        "snpe-tensorflow-to-dlc",
        "--input_network",
        str(bundle / "model.pb"),
        "--input_dim",
        "input",
        "1,48,48,1",
        "--out_node",
        "probabilities",
        "--output_path",
        str(bundle / "model.dlc"),
    )
    calib = bundle.parent / f"{bundle.name}-calib"
    calib.mkdir(exist_ok=True)
    rng = np.random.default_rng(1)
    paths = []
    for i in range(4):
        p = calib / f"c{i}.raw"
        rng.normal(size=(48, 48, 1)).astype("<f4").tofile(p)
        paths.append(str(p))
    (calib / "list.txt").write_text("\n".join(paths) + "\n")
    run(
        "snpe-dlc-quant",
        "--input_dlc",
        str(bundle / "model.dlc"),
        "--input_list",
        str(calib / "list.txt"),
        "--output_dlc",
        str(bundle / "model_quantized.dlc"),
    )
    files = {"dlc": "model.dlc", "dlc_quantized": "model_quantized.dlc"}
    if htp:
        run(
            "snpe-dlc-graph-prepare",
            "--input_dlc",
            str(bundle / "model_quantized.dlc"),
            "--output_dlc",
            str(bundle / "model_htp.dlc"),
            "--htp_socs",
            "sm8550",
        )
        files["dlc_htp"] = "model_htp.dlc"
    from agent.contracts.manifest import sha256_of

    raw = json.loads((bundle / "manifest.json").read_text())
    for role, rel in files.items():
        raw["files"][role] = {
            "path": rel,
            "sha256": sha256_of(bundle / rel),
            "input_name": "input",
            "output_name": "probabilities",
        }
    (bundle / "manifest.json").write_text(json.dumps(raw, indent=2) + "\n")
    return bundle


def litert_predict(model: Path, faces: np.ndarray) -> np.ndarray:
    """Reference scores computed in-process, one face at a time."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(model))
    interp.allocate_tensors()
    i, o = interp.get_input_details()[0], interp.get_output_details()[0]
    out = []
    for face in faces:
        interp.set_tensor(i["index"], face[None].astype(np.float32))
        interp.invoke()
        out.append(interp.get_tensor(o["index"])[0].copy())
    return np.stack(out)


def read_log(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
