"""``fer-host compile BUNDLE --soc qcs6490,sm8650``: QNN context binaries per SoC, recorded in the manifest.

For each SoC (``agent.contracts.qnn.SOCS`` gives its ``htp_arch`` and
``soc_model``) the QNN EP compiles ``model_qdq.onnx`` ahead of time into
``qnn/<soc>/model_ctx.onnx`` (an EPContext model) and the context binary it
loads (``model_ctx_qnn.bin``), so the board skips graph preparation; the
BlazeFace short-range QDQ model, when the bundle has one, gets
``qnn/<soc>/blazeface_short_ctx.onnx`` the same way. Every op must go to the
HTP (CPU fallback off). Each context is loaded back and run once on a zero
input before it is recorded.

Manifest: ``files.qnn_ctx_<soc>`` (and ``files.blazeface_short_qnn_ctx_<soc>``)
with the EPContext model's path and sha256, ``bin_path`` and ``bin_sha256``
for the binary, ``htp_arch``, ``soc_model``, the QNN version and the source
model's sha256. On x86_64 compilation uses the HTP simulator's libraries; the
binaries are the ones a board loads.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from agent.contracts import qnn
from agent.contracts.errors import FerError
from agent.contracts.manifest import Manifest, file_entry, load_manifest, sha256_of

#: source role -> (context name inside qnn/<soc>/, manifest role prefix)
SOURCES = {"onnx_qdq": ("model", "qnn_ctx"), "blazeface_short_onnx_qdq": ("blazeface_short", "blazeface_short_qnn_ctx")}


def compile_bundle(bundle: Path, socs: list[qnn.Soc], detectors: bool = True, echo=print) -> Manifest:
    bundle = Path(bundle)
    manifest = load_manifest(bundle, verify=False)
    if "onnx_qdq" not in manifest.files:
        raise FerError(f"{bundle}: the bundle has no onnx_qdq file (model_qdq.onnx): run `fer-host onnx {bundle} "
                       "--data FER2013.csv` (or re-export) first")
    sources = [r for r in SOURCES if r in manifest.files and (detectors or r == "onnx_qdq")]
    manifest.verify(sources)  # compile exactly the files the manifest vouches for
    files = dict(manifest.files)
    for target in socs:
        for role in sources:
            name, prefix = SOURCES[role]
            ctx = qnn.compile_context(manifest.path_of(role), bundle / "qnn" / target.name, target, name=name)
            info = _check(ctx, manifest, role)
            files[f"{prefix}_{target.name}"] = file_entry(
                bundle, ctx.onnx.relative_to(bundle).as_posix(),
                bin_path=ctx.bin.relative_to(bundle).as_posix(), bin_sha256=sha256_of(ctx.bin),
                bin_bytes=ctx.bin.stat().st_size, soc=target.name, htp_arch=target.htp_arch,
                soc_model=target.soc_model, **ctx.versions, source_role=role,
                source_sha256=manifest.files[role].sha256, compile_seconds=round(ctx.seconds, 3), **info)
            echo(f"{target.name} (v{target.htp_arch}, soc_model {target.soc_model}): {role} -> "
                 f"{ctx.onnx.relative_to(bundle)} + {ctx.bin.name} ({ctx.bin.stat().st_size / 1e6:.2f} MB) "
                 f"in {ctx.seconds:.2f} s")
    updated = dataclasses.replace(manifest, files=files)
    updated.write(bundle)
    return updated


def _check(ctx: qnn.Context, manifest: Manifest, role: str) -> dict[str, Any]:
    """The binary was prepared for the asked SoC, and it loads and runs; the tensor names it takes."""
    prepared = qnn.context_target(ctx.bin)
    if prepared and prepared.get("htp_arch") != ctx.soc.htp_arch:
        raise FerError(f"{ctx.bin}: prepared for HTP v{prepared['htp_arch']} ({prepared.get('soc_type')}), "
                       f"but {ctx.soc.name} is v{ctx.soc.htp_arch}: check agent/contracts/qnn.py SOCS")
    sess = qnn.qnn_session(ctx.onnx, ctx.soc.provider_options())
    feeds = {i.name: np.zeros([d if isinstance(d, int) else 1 for d in i.shape], np.float32) for i in sess.get_inputs()}
    try:
        sess.run(None, feeds)
    except Exception as exc:
        raise FerError(f"{ctx.onnx}: the compiled context does not run on the QNN HTP: "
                       f"{' '.join(str(exc).split())}") from None
    extra = manifest.files[role].extra
    names = {k: extra[k] for k in ("input_name", "output_name", "output_names", "layout") if k in extra}
    return {**names, **({"prepared_for": prepared["soc_type"]} if prepared else {})}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compile", help="QNN context binaries per SoC from model_qdq.onnx (QNN HTP)",
                       description="Compile the bundle's QDQ ONNX model (and BlazeFace short QDQ) into QNN HTP "
                                   "context binaries for each SoC, recorded in the manifest as files.qnn_ctx_<soc>.")
    p.add_argument("bundle", type=Path, help="model bundle directory (with manifest.json and model_qdq.onnx)")
    p.add_argument("--soc", required=True,
                   help=f"comma-separated SoCs: {', '.join(qnn.SOCS)} (see docs/qnn.md)")
    p.add_argument("--no-detectors", action="store_true", help="skip the BlazeFace context")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    socs = qnn.parse_socs(args.soc)
    if qnn.htp_is_simulated():
        print("# x86_64: compiling with the QNN HTP simulator's libraries; the context binaries are the board's")
    m = compile_bundle(args.bundle, socs, detectors=not args.no_detectors)
    roles = [r for r in m.files if "qnn_ctx_" in r]
    print(f"wrote {args.bundle}/manifest.json: {', '.join(roles)} (QNN {qnn.qnn_version()})")
    return 0
