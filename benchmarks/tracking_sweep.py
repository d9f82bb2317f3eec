"""How fast and how right the events are for one person whose expression changes every second.

The *one seat* scene without the camera: PublicTest faces (never Training),
each held for ``--hold`` seconds at the same place, classified by the default
bundle's int8 model on every frame, with the small crop jitter a detector's
box has from frame to frame (shift up to 2 px and scale up to 5 %, six crops
per face drawn at random per frame). The classifier's scores then go through
the agent's own :class:`agent.track.Tracker` at 15 and 60 frames/s for each
tracking setting, and the events are scored as a dashboard sees them:

* ``end-of-hold right``: the label the face's last event said, at the end of each hold, is the true one;
* ``classifier right``: the classifier's own argmax on the face (the ceiling the events can reach);
* ``change -> right``: seconds from a hold's start to the first event that says its true label (holds whose
  label the events never reached are left out; ``reached`` counts them);
* ``false changes``: `changed` events on a steady 'happy' face with 0.13 s bursts of 'surprise' every second
  (the unit test's jitter case), which should stay 0.

Run: ``python benchmarks/tracking_sweep.py [--faces 300] [--data CSV]`` (about a minute on 2 cores).
Results: ``benchmarks/results/tracking_sweep.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "datasets" / "fer2013" / "fer2013_train_publictest.csv.gz"
OUT = ROOT / "benchmarks" / "results"

from agent.classify import FaceClassifier  # noqa: E402
from agent.contracts.labels import LABELS  # noqa: E402
from agent.contracts.manifest import default_bundle_path, load_manifest  # noqa: E402
from agent.contracts.preprocess import Box, normalize  # noqa: E402
from agent.contracts.sysinfo import machine_line  # noqa: E402
from agent.track import Tracker, TrackingConfig  # noqa: E402

#: (name, tracking settings): the agent's old defaults (per-frame EMA), then candidates in seconds.
SETTINGS: list[tuple[str, dict]] = [
    (
        "old default: ema_alpha 0.3/frame, 0.5 s, conf 0.4",
        {"ema_alpha": 0.3, "min_duration_s": 0.5, "min_confidence": 0.4},
    ),
    (
        "default now: "
        + (lambda c: f"smoothing {c.smoothing_s:g} s, {c.min_duration_s:g} s, conf {c.min_confidence:g}")(
            TrackingConfig()
        ),
        {},
    ),
    ("smoothing 0.2 s, 0.5 s, conf 0.4", {"smoothing_s": 0.2, "min_duration_s": 0.5, "min_confidence": 0.4}),
    ("smoothing 0.2 s, 0.3 s, conf 0.4", {"smoothing_s": 0.2, "min_duration_s": 0.3, "min_confidence": 0.4}),
    ("smoothing 0.2 s, 0.3 s, conf 0.3", {"smoothing_s": 0.2, "min_duration_s": 0.3, "min_confidence": 0.3}),
    ("smoothing 0.15 s, 0.25 s, conf 0.3", {"smoothing_s": 0.15, "min_duration_s": 0.25, "min_confidence": 0.3}),
    ("smoothing 0.15 s, 0.25 s, conf 0", {"smoothing_s": 0.15, "min_duration_s": 0.25, "min_confidence": 0.0}),
    ("smoothing 0.1 s, 0.2 s, conf 0.3", {"smoothing_s": 0.1, "min_duration_s": 0.2, "min_confidence": 0.3}),
]
BOX = Box(240, 160, 160, 160)


@dataclass
class Row:
    setting: str
    fps: float
    end_of_hold_right: float
    classifier_right: float
    reached: float
    change_to_right_median_s: float | None
    change_to_right_p90_s: float | None
    false_changes: int


def jittered_scores(x: np.ndarray, clf: FaceClassifier, norm, rng: np.random.Generator, k: int = 6) -> np.ndarray:
    """``[N, k, labels]``: each face through the classifier in ``k`` slightly shifted/scaled crops."""
    out = np.empty((len(x), k, len(LABELS)), np.float32)
    for i, face in enumerate(x):
        crops = []
        for _ in range(k):
            s = 1 + rng.uniform(-0.05, 0.05)
            dx, dy = rng.uniform(-2, 2, 2)
            m = cv2.getRotationMatrix2D((23.5, 23.5), 0, s)
            m[:, 2] += (dx, dy)
            crops.append(cv2.warpAffine(face, m, (48, 48), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT))
        out[i] = clf.infer(normalize(np.stack(crops), norm)[..., None])
    return out


def replay(
    scores: np.ndarray, truth: np.ndarray, setting: dict, fps: float, hold_s: float, rng: np.random.Generator
) -> tuple[float, float, list[float]]:
    """End-of-hold accuracy, share of holds whose true label was reached, latencies (s) to the true label."""
    tracker = Tracker(TrackingConfig(update_interval_s=0, **setting), LABELS)
    per_hold = int(round(hold_s * fps))
    shown: str | None = None
    right, reached, latencies = 0, 0, []
    frame = 0
    for i in range(len(scores)):
        start = frame / fps
        got = None
        for _ in range(per_hold):
            frame += 1
            p = scores[i, rng.integers(scores.shape[1])][None]
            for e in tracker.update([BOX], p, 640, 480, frame, frame / fps):
                if e.type in ("appeared", "changed"):
                    shown = e.face.label
                    if got is None and shown == LABELS[truth[i]]:
                        got = frame / fps - start
        if shown == LABELS[truth[i]]:
            right += 1
            if got is None:
                got = 0.0  # already showing it: the previous face had the same label
        if got is not None:
            reached += 1
            latencies.append(got)
    return right / len(scores), reached / len(scores), latencies


def false_changes(setting: dict, fps: float) -> int:
    tracker = Tracker(TrackingConfig(update_interval_s=0, **setting), LABELS)
    happy = np.full(len(LABELS), 0.2 / 6, np.float32)
    happy[LABELS.index("happy")] = 0.8
    surprise = happy[::-1].copy()
    surprise[LABELS.index("surprise")], surprise[LABELS.index("happy")] = 0.8, 0.2 / 6
    n, changes = int(3 * fps), 0
    for f in range(1, n + 1):
        burst = (f / fps) % 1.0
        p = surprise if 0.33 <= burst < 0.33 + 0.13 else happy
        changes += sum(e.type == "changed" for e in tracker.update([BOX], p[None], 640, 480, f, f / fps))
    return changes


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--faces", type=int, default=300)
    ap.add_argument("--hold", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    from host_tools import data as fer_data

    if not args.data.exists():
        print(f"{args.data}: FER2013 file not found (see ../shared/datasets/fer2013/README.md)", file=sys.stderr)
        return 2
    test = fer_data.load(args.data).split("PublicTest")
    rng = np.random.default_rng(args.seed)
    pick = rng.choice(len(test.y), size=min(args.faces, len(test.y)), replace=False)
    manifest = load_manifest(default_bundle_path())
    clf = FaceClassifier.on(manifest, "tflite", None)
    t0 = time.time()
    scores = jittered_scores(test.x[pick], clf, manifest.input.normalization, rng)
    truth = test.y[pick]
    classifier_right = float((scores.mean(axis=1).argmax(1) == truth).mean())
    rows = []
    for name, setting in SETTINGS:
        for fps in (15.0, 60.0):
            acc, reached, lat = replay(scores, truth, setting, fps, args.hold, np.random.default_rng(args.seed + 1))
            med, p90 = (
                (round(float(np.median(lat)), 3), round(float(np.percentile(lat, 90)), 3)) if lat else (None, None)
            )
            rows.append(
                Row(
                    name,
                    fps,
                    round(acc, 4),
                    round(classifier_right, 4),
                    round(reached, 4),
                    med,
                    p90,
                    false_changes(setting, fps),
                )
            )
            print(
                f"{name:<52} {fps:>4.0f} fps: end-of-hold right {acc:6.1%} (classifier {classifier_right:.1%}), "
                f"reached {reached:.1%}, change->right median {med} s p90 {p90} s, "
                f"false changes {rows[-1].false_changes}"
            )
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": machine_line(),
        "bundle": f"{manifest.model_name} {manifest.model_version}",
        "faces": len(pick),
        "hold_s": args.hold,
        "seconds": round(time.time() - t0, 1),
        "command": " ".join(["python benchmarks/tracking_sweep.py", *sys.argv[1:]]),
        "rows": [asdict(r) for r in rows],
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "tracking_sweep.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        f"# One seat, expression changing every {args.hold:g} s: events vs tracking settings ({result['date']})",
        "",
        f"{len(pick)} PublicTest faces, {manifest.model_name} {manifest.model_version} int8 with crop jitter, "
        f"machine {result['machine']}. Command: `{result['command']}`.",
        "",
        "| setting | frames/s | end-of-hold right | classifier right | reached | change -> right median s | p90 s "
        "| false changes (jitter) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.setting} | {r.fps:.0f} | {r.end_of_hold_right:.1%} | {r.classifier_right:.1%} | "
            f"{r.reached:.1%} | {r.change_to_right_median_s} | {r.change_to_right_p90_s} | {r.false_changes} |"
        )
    (args.out / "tracking_sweep.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out / 'tracking_sweep.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
