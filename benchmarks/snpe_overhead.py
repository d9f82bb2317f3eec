"""Per-frame overhead of snpe-net-run as a process per frame (the stand-in) and of the in-process qnn runtime.

What it separates (median of --repeat calls each):

* ``spawn /bin/true``         - the OS floor for starting any process;
* ``backend file work only``  - what the snpe runtime itself adds per frame: writing
                                N raw files + input list, reading N results,
                                clearing the work dir (the process call
                                replaced by an in-process copy of canned results);
* ``canned shell tool``       - the same with a real process: a shell script
                                (sh + cp) standing in for a near-instant tool;
* ``stand-in call``           - the classifier on the snpe runtime end to end with the Python
                                stand-in (interpreter start, numpy + LiteRT
                                import, model load, N invokes);
* ``in-process LiteRT``       - the same N faces through one persistent
                                interpreter: the floor a persistent runtime
                                (SNPE C API / QNN context) approaches;
* ``in-process qnn``          - the same N faces through the agent's qnn runtime
                                (one ONNX Runtime session on the QNN HTP, kept),
                                and ``qnn session.run alone`` without the runtime
                                around it: the difference is what the in-process
                                runtime adds per frame. On x86_64 the HTP is
                                onnxruntime-qnn's *simulator*, so these two rows are
                                simulation times (the model's compute dominates),
                                never NPU times. ``qnn runtime work only`` replaces
                                the session by one that returns a stored answer:
                                what the runtime adds per frame without the
                                model's compute, comparable with ``backend file
                                work only`` + a process spawn on the snpe path.
                                Skipped without onnxruntime-qnn.

The real snpe-net-run is a native binary, so its start is cheaper than the
Python stand-in's, but every call also loads the DLC and initialises the
runtime (DSP/HTP session set-up) - the part only a persistent runtime removes.
Run: ``nice -n 19 .venv/bin/python benchmarks/snpe_overhead.py [--bundle DIR] [--faces 1 4] [--repeat 15]``.
On a board: ``--bundle <converted bundle> --tool <sdk>/bin/<arch>/snpe-net-run --runtime dsp`` times the real
tool on the bundle's own DLC instead of the stand-in.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "stand_ins"))

from fake_sdk import make_fake_sdk  # noqa: E402 - tests/stand_ins on sys.path first

from agent.classify import FaceClassifier  # noqa: E402
from agent.contracts.manifest import load_manifest  # noqa: E402
from agent.runtimes.snpe import SnpeConfig  # noqa: E402


def median_ms(fn, repeat: int) -> float:
    fn()  # warm-up: page cache, imports
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def prepare(bundle_src: Path, tmp: Path) -> tuple[Path, Path]:
    """A bundle copy with a stand-in model.dlc, and the fake SDK that made it."""
    from host_tools.convert import convert

    sdk = make_fake_sdk(tmp / "sdk")
    bundle = tmp / "bundle"
    shutil.copytree(bundle_src, bundle, ignore=shutil.ignore_patterns("saved_model", "*.png"))
    convert(bundle, quantize=False, sdk_root=str(sdk), echo=lambda s: None)
    return bundle, sdk


def canned_tool(tmp: Path, n: int, output: str, n_labels: int) -> Path:
    """A shell 'snpe-net-run' that only copies prepared results: isolates the backend's own file work."""
    canned = tmp / "canned"
    for i in range(n):
        (canned / f"Result_{i}").mkdir(parents=True, exist_ok=True)
        np.full(n_labels, 1.0 / n_labels, "<f4").tofile(canned / f"Result_{i}" / f"{output}.raw")
    tool = tmp / f"canned-net-run-{n}"
    tool.write_text(f'#!/bin/sh\n# args: --container C --input_list L --output_dir D\ncp -r {canned}/. "$6"\n')
    tool.chmod(0o755)
    return tool


def qnn_rows(bundle: Path, x: np.ndarray, repeat: int) -> list[tuple[str, int, float]]:
    """The qnn runtime and its bare session on the same faces (the bundle's first QNN context, else its QDQ model)."""
    from agent.contracts import qnn
    from agent.runtimes.qnn import QnnConfig

    manifest = load_manifest(bundle, verify=False)
    contexts = sorted(r.removeprefix("qnn_ctx_") for r in manifest.files if r.startswith("qnn_ctx_"))
    if not qnn.qnn_available() or not (contexts or manifest.has("onnx_qdq")):
        return []
    clf = FaceClassifier.on(manifest, "qnn", QnnConfig(soc=contexts[0] if contexts else None))
    session, name = clf.runtime.session, clf.runtime.session.get_inputs()[0].name
    where = "HTP simulator" if qnn.htp_is_simulated() else "HTP"

    def bare(x: np.ndarray = x) -> None:
        for face in x:
            session.run(None, {name: face[None]})

    rows = [
        (f"in-process qnn runtime ({where})", len(x), median_ms(lambda: clf.infer(x), repeat)),
        (f"qnn session.run alone ({where})", len(x), median_ms(bare, repeat)),
    ]

    class Answered:  # the session's answer without its compute: what the runtime itself costs per frame
        def __init__(self, real):
            self.out = [o.copy() for o in real.run(None, {name: x[:1]})]

        def run(self, _names, _feeds):
            return self.out

    clf.runtime.session = Answered(session)
    rows.append(("qnn runtime work only (no compute)", len(x), median_ms(lambda: clf.infer(x), max(repeat, 200))))
    clf.close()
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default = ROOT / "agent" / "models" / "default"
    ap.add_argument(
        "--bundle",
        type=Path,
        default=default if (default / "manifest.json").exists() else ROOT / "tests" / "stand_ins" / "tiny_bundle",
    )
    ap.add_argument("--faces", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    ap.add_argument(
        "--tool", type=Path, default=None, help="a real snpe-net-run: time it on the bundle's DLC (no stand-in)"
    )
    ap.add_argument("--runtime", default="cpu", choices=("cpu", "gpu", "dsp", "aip"))
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="snpe-bench-"))
    try:
        if args.tool:
            bundle, sdk = args.bundle, None
        else:
            bundle, sdk = prepare(args.bundle, tmp)
        manifest = load_manifest(bundle, verify=False)
        run_cfg = {"snpe_net_run": str(args.tool)} if args.tool else {"sdk_root": str(sdk)}
        rows: list[tuple[str, int, float]] = [
            ("spawn /bin/true", 0, median_ms(lambda: subprocess.run(["/bin/true"], check=True), args.repeat))
        ]
        from ai_edge_litert.interpreter import Interpreter

        interp = Interpreter(model_path=str(manifest.path_of("tflite")))
        interp.allocate_tensors()
        i_det, o_det = interp.get_input_details()[0], interp.get_output_details()[0]
        for n in args.faces:
            x = np.random.default_rng(n).normal(size=(n, *manifest.input.shape[1:])).astype(np.float32)
            out_name = manifest.tensor_names("dlc")[1]
            tool = canned_tool(tmp, n, out_name, len(manifest.labels))
            canned = tmp / "canned"
            # Default work dir (tmpfs), as on the board.
            io_only = FaceClassifier.on(manifest, "snpe", SnpeConfig(target="cpu", snpe_net_run=str(tool)))
            io_only.runtime.runner._call = lambda cmd, r=io_only.runtime.runner, c=canned: shutil.copytree(
                c, r.output_dir
            )  # no process
            rows.append(("backend file work only", n, median_ms(lambda b=io_only, x=x: b.infer(x), args.repeat)))
            io_only.close()
            shell = FaceClassifier.on(manifest, "snpe", SnpeConfig(target="cpu", snpe_net_run=str(tool)))
            rows.append(("canned shell tool (sh + cp)", n, median_ms(lambda b=shell, x=x: b.infer(x), args.repeat)))
            shell.close()
            real = FaceClassifier.on(manifest, "snpe", SnpeConfig(target=args.runtime, **run_cfg))
            label = f"snpe-net-run call ({args.runtime})" if args.tool else "stand-in snpe-net-run call"
            rows.append((label, n, median_ms(lambda b=real, x=x: b.infer(x), args.repeat)))
            real.close()

            def litert(x: np.ndarray = x) -> None:
                for face in x:
                    interp.set_tensor(i_det["index"], face[None])
                    interp.invoke()
                    interp.get_tensor(o_det["index"])

            rows.append(("in-process LiteRT (persistent)", n, median_ms(litert, args.repeat)))
            rows += qnn_rows(args.bundle, x, max(3, args.repeat // 3))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"bundle: {args.bundle} ({manifest.model_name} {manifest.model_version}); median of {args.repeat} calls")
    print(f"{'what':<40} {'faces':>5} {'ms/call':>9}")
    for what, n, ms in rows:
        print(f"{what:<40} {n or '-':>5} {ms:9.3f}")
    if args.json:
        args.json.write_text(
            json.dumps([{"what": w, "faces": n, "ms_per_call": round(ms, 4)} for w, n, ms in rows], indent=2) + "\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
