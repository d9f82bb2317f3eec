"""``fer-agent bench``: measured frames/s and ms per stage, written as JSON + markdown.

Scenarios: Haar and BlazeFace, 1 and 4 faces, on a generated 640x480 MP4 of
the astronaut's real face (decoded by OpenCV, so capture is real work), run
through the real :class:`~agent.pipeline.Pipeline` with the tflite backend;
publishing goes to a null publisher (on the frame loop's side the MQTT
publisher copies each event into its journal and appends it to a queue, ~2 µs,
``benchmarks/publish_event_cost.py``). Plus the classifier alone: ms per face for
the float and int8 files on one thread. By default everything is pinned to
one CPU core, the issue's target condition.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from agent import __version__
from agent.contracts.sysinfo import cpu_model

DEFAULT_OUT = Path("benchmarks") / "results"
RESULT_NAME = "agent_bench"


def machine_description() -> dict[str, Any]:
    cpu = cpu_model()
    try:
        from agent.contracts.litert import runtime_name

        runtime = runtime_name()
    except Exception:  # noqa: BLE001 - describe what is there, whatever it is
        runtime = "none"
    try:
        from importlib.metadata import version

        litert = version("ai-edge-litert")
    except Exception:  # noqa: BLE001
        litert = "n/a"
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "os": f"{platform.system()} {platform.release()} {platform.machine()}",
        "python": platform.python_version(),
        "opencv": cv2.__version__,
        "numpy": np.__version__,
        "tflite_runtime": f"{runtime} {litert}",
        "agent": __version__,
    }


def _write_bench_clip(path: Path, n_faces: int, frames: int) -> Path:
    from agent.synthetic import FRAME_H, FRAME_W, astronaut_bgr, grid_frame

    photo = astronaut_bgr()
    base = grid_frame(n_faces, photo=photo)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 30.0, (FRAME_W, FRAME_H))
    for i in range(frames):
        dx = int(round(6 * np.sin(i / 7.0)))  # small motion: the tracker and the codec both see change
        writer.write(np.roll(base, dx, axis=1))
    writer.release()
    return path


def bench_pipeline(
    detector: str,
    n_faces: int,
    frames: int,
    bundle: Path | None,
    tmp: Path,
    model: str = "int8",
    full_frame_every: int = 1,
    tiles: int = 1,
) -> dict[str, Any]:
    from agent.capture import open_source
    from agent.config import AgentConfig
    from agent.contracts.manifest import load_manifest
    from agent.detectors import create_detector
    from agent.pipeline import NullPublisher
    from agent.runner import build_pipeline

    clip = tmp / f"bench_{n_faces}.mp4"
    if not clip.exists():
        _write_bench_clip(clip, n_faces, frames)
    cfg = AgentConfig()
    cfg.source.uri = str(clip)
    kind, _, variant = detector.partition("-")
    cfg.detector.type = kind  # type: ignore[assignment]
    if variant:
        cfg.detector.blazeface.model = variant
    cfg.detector.haar.full_frame_every = full_frame_every
    cfg.detector.blazeface.tiles = tiles
    cfg.publish = replace(cfg.publish, stats_interval_s=1e9)
    cfg.backend.type = "tflite"
    manifest = load_manifest(bundle or cfg.bundle_path())
    classifier = _tflite_classifier(manifest, model)
    det = create_detector(cfg.detector, manifest, cfg.backend)
    source = open_source(cfg.source)
    publisher = NullPublisher()
    pipeline = build_pipeline(cfg, manifest, source, det, classifier, publisher)
    t0 = time.perf_counter()
    summary = pipeline.run()
    elapsed = time.perf_counter() - t0
    faces_seen = pipeline.times.summary()
    return {
        "detector": f"blazeface-{cfg.detector.blazeface.model}" if kind == "blazeface" else kind,
        "faces": n_faces,
        "full_frame_every": full_frame_every,
        "tiles": tiles,
        "frames": summary.frames,
        "fps": round(summary.frames / elapsed, 1),
        "stages": faces_seen,
        "events": len(publisher.events),
        "faces_per_frame": round(pipeline.faces_total / max(1, summary.frames), 2),
    }


def _tflite_classifier(manifest: Any, model: str) -> Any:
    from agent.classify import FaceClassifier
    from agent.runtimes.tflite import TFLiteConfig

    return FaceClassifier.on(manifest, "tflite", TFLiteConfig(model=model, threads=1))  # type: ignore[arg-type]


def _time_faces(classifier: Any, face: np.ndarray, iterations: int, warmup: int) -> dict[str, float]:
    for _ in range(warmup):
        classifier.infer(face)
    times = np.empty(iterations)
    for i in range(iterations):
        t0 = time.perf_counter()
        classifier.infer(face)
        times[i] = time.perf_counter() - t0
    ms = times * 1000
    return {"iterations": iterations, "mean_ms": round(float(ms.mean()), 3), "p50_ms": round(float(np.median(ms)), 3),
            "p95_ms": round(float(np.percentile(ms, 95)), 3)}


def bench_classifier(bundle: Path | None, iterations: int, qnn_iterations: int = 20) -> list[dict[str, Any]]:
    """ms per face: TFLite float and int8 on one thread, and the qnn runtime when onnxruntime-qnn is installed.

    On x86_64 the qnn row is libQnnHtp.so's HTP *simulator*, labelled so: never an NPU time.
    """
    from agent.classify import FaceClassifier
    from agent.contracts import qnn
    from agent.contracts.manifest import default_bundle_path, load_manifest
    from agent.contracts.preprocess import Box, face_tensor
    from agent.synthetic import grid_frame

    manifest = load_manifest(bundle or default_bundle_path())
    frame = grid_frame(1)
    face = face_tensor(frame, Box(260, 180, 120, 120), manifest.input)[None]
    rows = []
    for model in ("float", "int8"):
        backend = _tflite_classifier(manifest, model)
        rows.append({"model": model, "runtime": "tflite", "file": backend.runtime.path.name, "threads": 1,
                     **_time_faces(backend, face, iterations, 50)})
    if qnn.qnn_available() and (manifest.has("onnx_qdq") or any(r.startswith("qnn_ctx_") for r in manifest.files)):
        from agent.runtimes.qnn import QnnConfig
        from agent.service import resolve_state_dir

        soc = qnn.detect_soc()
        ctx = sorted(r for r in manifest.files if r.startswith("qnn_ctx_"))
        name = soc.name if soc else (ctx[0].removeprefix("qnn_ctx_") if ctx else None)
        clf = FaceClassifier.on(manifest, "qnn", QnnConfig(soc=name), state_dir=resolve_state_dir())
        where = "HTP simulator on x86_64 (not NPU time)" if qnn.htp_is_simulated() else "HTP (NPU)"
        rows.append({"model": f"qnn, {where}", "runtime": "qnn", "file": clf.runtime.path.name, "threads": 1,
                     "soc": name, **_time_faces(clf, face, qnn_iterations, 3)})
        clf.close()
    return rows


def compare_classifiers(bundle: Path | None, baseline: Path, iterations: int, rounds: int = 10) -> dict[str, Any]:
    """ms per face of ``bundle`` against ``baseline``, int8 and float on one thread, measured back to back.

    The two run in alternating blocks (``rounds`` of ``iterations / rounds`` calls each), so a machine that
    slows down or speeds up mid-run (a throttled VM, a neighbour's job) moves both alike; the ratio of the
    medians is the number a budget is checked against.
    """
    from agent.contracts.manifest import default_bundle_path, load_manifest
    from agent.contracts.preprocess import Box, face_tensor
    from agent.synthetic import grid_frame

    ours, base = load_manifest(bundle or default_bundle_path()), load_manifest(baseline)
    face = face_tensor(grid_frame(1), Box(260, 180, 120, 120), ours.input)[None]
    out: dict[str, Any] = {"bundle": f"{ours.model_name} {ours.model_version}",
                           "baseline": f"{base.model_name} {base.model_version}", "rounds": rounds}
    block = max(1, iterations // rounds)
    for model in ("int8", "float"):
        clf = {"bundle": _tflite_classifier(ours, model), "baseline": _tflite_classifier(base, model)}
        times: dict[str, list[float]] = {k: [] for k in clf}
        for c in clf.values():
            _time_faces(c, face, 1, 50)
        for _ in range(rounds):
            for k, c in clf.items():
                for _ in range(block):
                    t0 = time.perf_counter()
                    c.infer(face)
                    times[k].append((time.perf_counter() - t0) * 1000)
        for c in clf.values():
            c.close()
        med = {k: float(np.median(v)) for k, v in times.items()}
        out[model] = {"bundle_ms": round(med["bundle"], 4), "baseline_ms": round(med["baseline"], 4),
                      "ratio": round(med["bundle"] / med["baseline"], 3), "iterations": block * rounds}
    return out


def to_markdown(result: dict[str, Any]) -> str:
    m = result["machine"]
    lines = [
        f"# fer-agent benchmark ({result['date']})",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores ({result['pinned']}), {m['os']}; Python {m['python']}, "
        f"OpenCV {m['opencv']}, {m['tflite_runtime']}. Bundle: {result['bundle']}.",
        "",
        f"End to end on a generated 640x480 MP4 of real faces (decode -> detect -> preprocess -> infer -> "
        f"track -> publish to a null publisher), {result['frames']} frames, classifier int8, 1 thread:",
        "",
        "| detector | faces | found/frame | frames/s | capture | detect | preprocess | infer | interpret | publish "
        "| total (p95) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["pipeline"]:
        s = r["stages"]

        def ms(k: str, s: dict = s) -> str:
            return f"{s[k]['mean_ms']:.2f}" if k in s else "-"

        name = _label(r)
        lines.append(
            f"| {name} | {r['faces']} | {r['faces_per_frame']:.2f} | {r['fps']:.1f} | {ms('capture')} | "
            f"{ms('detect')} | "
            f"{ms('preprocess')} | {ms('infer')} | {ms('interpret')} | {ms('publish')} | "
            f"{ms('total')} ({s['total']['p95_ms']:.2f}) |"
        )
    lines += [
        "",
        "Stage times are means in ms per frame.",
        "",
        "Classifier alone, one face, 1 thread:",
        "",
        "| model | file | mean ms/face | p50 | p95 |",
        "|---|---|---:|---:|---:|",
    ]
    for r in result["classifier"]:
        lines.append(f"| {r['model']} | {r['file']} | {r['mean_ms']:.3f} | {r['p50_ms']:.3f} | {r['p95_ms']:.3f} |")
    cmp = result.get("baseline")
    if cmp:
        lines += ["", f"Back to back against {cmp['baseline']} (median ms/face over {cmp['rounds']} alternating "
                      "blocks, one thread):", "", f"| model | {cmp['bundle']} | {cmp['baseline']} | ratio |",
                  "|---|---:|---:|---:|"]
        lines += [f"| {m} | {cmp[m]['bundle_ms']:.3f} | {cmp[m]['baseline_ms']:.3f} | {cmp[m]['ratio']:.3f} |"
                  for m in ("int8", "float")]
    lines += ["", f"Command: `{result['command']}`", ""]
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--frames", type=int, default=600, help="frames per pipeline scenario (default 600)")
    parser.add_argument("--iterations", type=int, default=2000, help="classifier invocations per model (default 2000)")
    parser.add_argument("--bundle", help="model bundle (default: the one inside the package)")
    parser.add_argument("--out", default=str(DEFAULT_OUT), help=f"output directory (default {DEFAULT_OUT})")
    parser.add_argument("--all-cores", action="store_true", help="do not pin the process to one CPU core")
    parser.add_argument(
        "--detectors",
        default="haar,blazeface-short,blazeface-full",
        help="comma-separated: haar, blazeface-short, blazeface-full, yunet (default: the first three)",
    )
    parser.add_argument(
        "--full-frame-every",
        default="1,3",
        help="comma-separated detector.haar.full_frame_every values to compare (default 1,3; 3 is the config default)",
    )
    parser.add_argument(
        "--tiles",
        default="1,2",
        help="comma-separated detector.blazeface.tiles values to compare (default 1,2; 2 is the config default)",
    )
    parser.add_argument("--faces", default="1,4", help="comma-separated face counts (default 1,4)")
    parser.add_argument(
        "--baseline",
        metavar="BUNDLE",
        help="also time the classifier against this bundle back to back (alternating blocks) and print the ratio; "
        "--detectors '' skips the pipeline scenarios",
    )


def _label(r: dict[str, Any]) -> str:
    every, tiles = r.get("full_frame_every", 1), r.get("tiles", 1)
    if r["detector"].startswith("blazeface"):
        return r["detector"] if tiles == 1 else f"{r['detector']} + {tiles}x{tiles} tiles"
    if r["detector"] != "haar":
        return r["detector"]
    return "haar, whole frame every frame" if every == 1 else f"haar, whole frame every {every}"


def _items(text: str, kind: type = str) -> list:
    return [kind(x.strip()) for x in text.split(",") if x.strip()]


def bench_command(args: argparse.Namespace) -> int:
    import shlex
    import sys

    cv2.setNumThreads(1)
    pinned = "all cores"
    if not args.all_cores and hasattr(os, "sched_setaffinity"):
        core = min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {core})
        pinned = f"pinned to core {core}"
    bundle = Path(args.bundle) if args.bundle else None
    result: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": machine_description(),
        "pinned": pinned,
        "frames": args.frames,
        "command": " ".join(["fer-agent bench", *(shlex.quote(a) for a in sys.argv[2:])]),
        "pipeline": [],
    }
    from agent.contracts.manifest import default_bundle_path, load_manifest

    man = load_manifest(bundle or default_bundle_path())
    result["bundle"] = f"{man.model_name} {man.model_version}"
    with tempfile.TemporaryDirectory(prefix="fer-bench-") as tmp:
        scenarios = [
            (det, n, every if det == "haar" else 1, tiles if det.startswith("blazeface") else 1)
            for det, n, every, tiles in itertools.product(
                _items(args.detectors), _items(args.faces, int), _items(args.full_frame_every, int),
                _items(args.tiles, int),
            )
        ]
        for det, n, every, tiles in dict.fromkeys(scenarios):  # each knob means something for one detector
            r = bench_pipeline(det, n, args.frames, bundle, Path(tmp), full_frame_every=every, tiles=tiles)
            result["pipeline"].append(r)
            label = _label(r)
            print(
                f"{label:>30} {n} face(s): {r['fps']:7.1f} frames/s  "
                f"total {r['stages']['total']['mean_ms']:.2f} ms (p95 {r['stages']['total']['p95_ms']:.2f})",
                flush=True,
            )
    result["classifier"] = bench_classifier(bundle, args.iterations)
    for r in result["classifier"]:
        name = "classifier " + r["model"]
        print(f"{name:>30}: {r['mean_ms']:.3f} ms/face (p95 {r['p95_ms']:.3f})", flush=True)
    if args.baseline:
        cmp = result["baseline"] = compare_classifiers(bundle, Path(args.baseline), args.iterations)
        for m in ("int8", "float"):
            print(f"{'classifier ' + m + ' vs baseline':>30}: {cmp[m]['bundle_ms']:.3f} against "
                  f"{cmp[m]['baseline_ms']:.3f} ms/face ({cmp['baseline']}): ratio {cmp[m]['ratio']:.3f}", flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{RESULT_NAME}.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / f"{RESULT_NAME}.md").write_text(to_markdown(result))
    print(f"wrote {out / (RESULT_NAME + '.json')} and {out / (RESULT_NAME + '.md')}")
    return 0
