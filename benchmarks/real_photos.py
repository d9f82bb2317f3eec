"""Accuracy on real photographs: the agent's own detector, crop and classifier, with the ``fer`` package beside it.

FER2013 PublicTest is the training data's own distribution; a camera sees other faces. This scores the
release check set ``realphotos_dev.npz`` (``../shared/datasets/realphotos-dev``: JAFFE posed portraits, LFW
news photos and IMFDB film stills; **evaluation only** - never train, calibrate or pick thresholds on it,
never commit it or images made from it) the way a user meets the model:

* each photo is decoded as BGR (grey photos as three equal channels) and placed at its own resolution
  (shrunk to fit when larger) in the middle of a 640x480 mid-grey frame - a face in front of a camera;
* ours: the agent's default config (``fer-agent print-config``): its detector on the frame, the largest
  face, the crop and preprocessing of :func:`agent.contracts.preprocess.face_tensor` with
  ``detector.margin``, the classifier on the runtime ``backend`` selects (LiteRT int8 here), exactly as in
  ``fer-agent run``;
* the peer: ``fer.FER(mtcnn=False).detect_emotions`` (Haar + mini-Xception) on the same frame, largest face;
* a face is *found* when a detection's centre lies inside the placed photo; a photo with no face found
  counts as wrong in *accuracy* (what a user gets) and is left out of *of found*;
* reported per source (``jaffe``, ``lfw_students``) and, within lfw_students, per origin (``lfw``, ``imfdb``):
  accuracy, macro accuracy (mean per-class recall over the classes present), per-class recall with class
  counts, found rate; a confusion matrix PNG per source and model.

``--bundle`` scores another bundle with the same detector (the default bundle's). ``--crops FILE`` also
writes our 48x48 grey crops (before normalisation) with labels to FILE outside the repository (``runs/`` is
git-ignored), so candidate networks can be compared on exactly these crops without running the detector
again; that file is made from the dev set and must never be committed or trained on.

``--e2e [N]`` adds the one-seat form (:mod:`real_photos_e2e`): N photos per source (default 100, fixed seed),
each held 1 s on a 640x480 frame placed as here, played in real time to the real ``fer-agent run`` against a
real mosquitto and scored from its MQTT events (the label the dashboard shows at the end of each hold), with
the peer on the same frames; its table follows the single-frame one in the same JSON (``e2e``) and markdown.

    python benchmarks/real_photos.py                       # ours + fer, results in benchmarks/results/real_photos/
    python benchmarks/real_photos.py --e2e                 # ... and 100 photos per source through fer-agent run
    make accuracy-photos                                  # both, installing the fer peer first
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))  # real_photos_e2e, also when loaded by file path (the tests)

from agent.contracts.labels import LABELS  # noqa: E402
from agent.contracts.sysinfo import machine_line  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "datasets" / "realphotos-dev" / "realphotos_dev.npz"
RESULTS = ROOT / "benchmarks" / "results" / "real_photos"
FRAME_W, FRAME_H = 640, 480
BACKGROUND = 128  # mid grey: no structure the detector could take for a face
E2E_PER_SOURCE = 100  # --e2e: photos per source played to `fer-agent run` (1 s each)
GROUPS = (("jaffe", "source", "jaffe"), ("lfw_students", "source", "lfw_students"),
          ("lfw_students/lfw", "origin", "lfw"), ("lfw_students/imfdb", "origin", "imfdb"))


@dataclass
class Photos:
    """The dev set's arrays, each read once (the npz unpickles ``jpeg`` on every access)."""

    jpeg: np.ndarray
    label: np.ndarray
    source: np.ndarray
    origin: np.ndarray

    @classmethod
    def load(cls, path: Path, limit: int = 0) -> Photos:
        if not path.is_file():
            raise SystemExit(f"{path}: real-photo dev set not found (see ../shared/datasets/realphotos-dev/README.md)")
        d = np.load(path, allow_pickle=True)
        p = cls(d["jpeg"], d["label"].astype(np.int64), d["source"].astype(str), d["origin"].astype(str))
        if limit:  # a smoke run: `limit` photos of each source, drawn at random (fixed seed)
            rng = np.random.default_rng(0)
            idx = np.concatenate([np.sort(rng.permutation(np.flatnonzero(p.source == s))[:limit])
                                  for s in np.unique(p.source)])
            p = cls(p.jpeg[idx], p.label[idx], p.source[idx], p.origin[idx])
        return p

    def __len__(self) -> int:
        return len(self.label)


def place(image: np.ndarray) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """``image`` (BGR) centred on a 640x480 mid-grey frame, shrunk to fit; returns the frame and its rectangle."""
    h, w = image.shape[:2]
    s = min(1.0, FRAME_W / w, FRAME_H / h)
    if s < 1.0:
        w, h = max(1, int(w * s)), max(1, int(h * s))
        image = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
    frame = np.full((FRAME_H, FRAME_W, 3), BACKGROUND, np.uint8)
    x0, y0 = (FRAME_W - w) // 2, (FRAME_H - h) // 2
    frame[y0:y0 + h, x0:x0 + w] = image
    return frame, (x0, y0, w, h)


def inside(box: tuple[float, float, float, float], rect: tuple[int, int, int, int]) -> bool:
    cx, cy = box[0] + box[2] / 2, box[1] + box[3] / 2
    return rect[0] <= cx < rect[0] + rect[2] and rect[1] <= cy < rect[1] + rect[3]


def frames(photos: Photos):
    for buf in photos.jpeg:
        image = cv2.imdecode(np.frombuffer(buf, np.uint8), cv2.IMREAD_COLOR)
        yield place(image)


# --------------------------------------------------------------------------- ours


class Ours:
    """The agent's detector -> crop -> classifier, built from its default config as ``fer-agent run`` does."""

    def __init__(self, bundle: Path | None) -> None:
        from agent.classify import FaceClassifier
        from agent.config import load_config
        from agent.contracts.manifest import default_bundle_path, load_manifest
        from agent.detectors import create_detector
        from agent.runtimes import create_runtime

        self.cfg = load_config(None)
        detector_bundle = load_manifest(default_bundle_path())
        self.manifest = load_manifest(bundle or default_bundle_path())
        self.detector = create_detector(self.cfg.detector, detector_bundle, self.cfg.backend)
        started = create_runtime(self.cfg.backend, FaceClassifier.model(self.manifest))
        self.classifier = FaceClassifier(self.manifest, started.runtime)
        self.name = f"{self.manifest.model_name} {self.manifest.model_version}"

    def describe(self) -> str:
        return f"{self.name} on {self.classifier.describe()}, detector {self.detector.describe()}"

    def crop(self, frame: np.ndarray, rect) -> np.ndarray | None:
        """The largest found face's 48x48 grey crop (uint8, before normalisation), or None."""
        from agent.contracts.preprocess import resize_grey, square_crop, to_grey

        grey = to_grey(frame)
        dets = [d for d in self.detector.detect(frame, grey) if inside((d.box.x, d.box.y, d.box.w, d.box.h), rect)]
        if not dets:
            return None
        x0, y0, x1, y1 = square_crop(dets[0].box, FRAME_W, FRAME_H, self.cfg.detector.margin)
        return resize_grey(np.ascontiguousarray(grey[y0:y1, x0:x1]), self.manifest.input)

    def classify(self, crops: np.ndarray) -> np.ndarray:
        from agent.contracts.preprocess import normalize

        x = normalize(crops, self.manifest.input.normalization)[..., None]
        return np.concatenate([self.classifier.infer(x[i:i + 64]) for i in range(0, len(x), 64)])

    def close(self) -> None:
        self.detector.close()
        self.classifier.close()


def run_ours(photos: Photos, bundle: Path | None, crops_out: Path | None) -> dict[str, Any]:
    ours = Ours(bundle)
    t0 = time.process_time()
    crops, found = np.zeros((len(photos), 48, 48), np.uint8), np.zeros(len(photos), bool)
    for i, (frame, rect) in enumerate(frames(photos)):
        c = ours.crop(frame, rect)
        if c is not None:
            crops[i], found[i] = c, True
    pred = np.full(len(photos), -1)
    if found.any():
        pred[found] = ours.classify(crops[found]).argmax(axis=1)
    cpu = time.process_time() - t0
    if crops_out is not None:
        crops_out.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(crops_out, crops=crops, found=found, label=photos.label, source=photos.source,
                            origin=photos.origin, margin=ours.cfg.detector.margin)
        print(f"# crops written to {crops_out} (made from the dev set: evaluation only, never commit)")
    described = ours.describe()
    ours.close()
    return {"name": ours.name, "describe": described, "pred": pred, "cpu_s": round(cpu, 1)}


# --------------------------------------------------------------------------- the fer peer


def run_peer(photos: Photos) -> dict[str, Any] | None:
    from e2e_accuracy import load_fer_peer  # the one way the benchmarks load the peer

    peer, name = load_fer_peer()
    if peer is None:
        print(f"# peer skipped: {name}; make accuracy-photos installs it", file=sys.stderr)
        return None
    t0 = time.process_time()
    pred = np.full(len(photos), -1)
    for i, (frame, rect) in enumerate(frames(photos)):
        faces = [f for f in peer.detect_emotions(frame) if inside(tuple(f["box"]), rect)]
        if faces:
            best = max(faces, key=lambda f: f["box"][2] * f["box"][3])
            pred[i] = LABELS.index(max(best["emotions"], key=best["emotions"].get))
    return {"name": name, "describe": "fer.FER(mtcnn=False): Haar + mini-Xception",
            "pred": pred, "cpu_s": round(time.process_time() - t0, 1)}


# --------------------------------------------------------------------------- scoring


def score(pred: np.ndarray, label: np.ndarray) -> dict[str, Any]:
    """Accuracy (a face not found is wrong), of found, macro accuracy, per-class recall, confusion."""
    found = pred >= 0
    present = [c for c in range(len(LABELS)) if (label == c).any()]
    recall = {LABELS[c]: round(float((pred[label == c] == c).mean()), 4) for c in present}
    conf = np.zeros((len(LABELS), len(LABELS) + 1), int)  # last column: no face found
    for t, p in zip(label, pred, strict=True):
        conf[t, p if p >= 0 else len(LABELS)] += 1
    return {
        "n": int(len(label)),
        "found": round(float(found.mean()), 4),
        "accuracy": round(float((pred == label).mean()), 4),
        "accuracy_of_found": round(float((pred[found] == label[found]).mean()), 4) if found.any() else None,
        "macro_accuracy": round(float(np.mean(list(recall.values()))), 4),
        "recall": recall,
        "counts": {LABELS[c]: int((label == c).sum()) for c in present},
        "confusion": conf.tolist(),
    }


def score_groups(pred: np.ndarray, photos: Photos) -> dict[str, Any]:
    out = {}
    for name, field, value in GROUPS:
        mask = getattr(photos, field) == value
        if mask.any():
            out[name] = score(pred[mask], photos.label[mask])
    return out


def table(results: dict[str, dict[str, Any]]) -> str:
    models = list(results)
    head = "| set | n | " + " | ".join(f"{m}: accuracy (macro), found" for m in models) + " |"
    lines = [head, "|---|---:|" + "---:|" * len(models)]
    for name, _, _ in GROUPS:
        row = [r["groups"].get(name) for r in results.values()]
        if row[0] is None:
            continue
        cells = [f"{g['accuracy']:.1%} ({g['macro_accuracy']:.1%}), {g['found']:.0%}" for g in row]
        lines.append(f"| {name} | {row[0]['n']} | " + " | ".join(cells) + " |")
    lines += ["", "Per-class recall (class count in brackets):", "",
              "| set | model | " + " | ".join(LABELS) + " |", "|---|---|" + "---:|" * len(LABELS)]
    for name, _, _ in GROUPS:
        for m, r in results.items():
            g = r["groups"].get(name)
            if g:
                cells = [f"{g['recall'][lab]:.0%} ({g['counts'][lab]})" if lab in g["recall"] else "-"
                         for lab in LABELS]
                lines.append(f"| {name} | {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def confusion_png(conf: list[list[int]], title: str, path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    c = np.asarray(conf, float)
    rows = c / np.maximum(c.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(6.4, 5))
    ax.imshow(rows, cmap="Blues", vmin=0, vmax=1)
    cols = [*LABELS, "no face"]
    ax.set_xticks(range(len(cols)), cols, rotation=45, ha="right")
    ax.set_yticks(range(len(LABELS)), LABELS)
    for i in range(c.shape[0]):
        for j in range(c.shape[1]):
            if c[i, j]:
                ax.text(j, i, int(c[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if rows[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="realphotos_dev.npz")
    ap.add_argument("--bundle", type=Path, help="classifier bundle to score (default: the committed default)")
    ap.add_argument("--no-peer", action="store_true", help="skip the fer peer")
    ap.add_argument("--limit", type=int, default=0, help="N photos of each source, fixed seed (smoke runs)")
    ap.add_argument("--e2e", type=int, nargs="?", const=E2E_PER_SOURCE, default=0, metavar="N",
                    help="also the one-seat form through the real `fer-agent run` and mosquitto on N photos per "
                         f"source (default N: {E2E_PER_SOURCE}; 1 s of real time per photo; "
                         "benchmarks/real_photos_e2e.py)")
    ap.add_argument("--crops", type=Path, help="also save our crops here (outside the repo; never commit)")
    ap.add_argument("--out", type=Path, default=RESULTS, help=f"results folder (default {RESULTS.relative_to(ROOT)})")
    args = ap.parse_args(argv)
    photos = Photos.load(args.data, args.limit)
    runs = [run_ours(photos, args.bundle, args.crops)]
    if not args.no_peer:
        peer = run_peer(photos)
        if peer:
            runs.append(peer)
    results = {r["name"]: {"describe": r["describe"], "cpu_s": r["cpu_s"], "groups": score_groups(r["pred"], photos)}
               for r in runs}
    report = {"data": str(args.data), "photos": len(photos), "limit": args.limit, "machine": machine_line(),
              "date": time.strftime("%Y-%m-%d"), "frame": f"{FRAME_W}x{FRAME_H}", "results": results}
    if args.e2e:
        import real_photos_e2e

        report["e2e"] = real_photos_e2e.run(photos, args.e2e, 0, args.bundle, peer=not args.no_peer)
    args.out.mkdir(parents=True, exist_ok=True)
    slug = runs[0]["name"].replace(" ", "_")
    (args.out / f"{slug}.json").write_text(json.dumps(report, indent=1) + "\n")
    md = table(results)
    if "e2e" in report:
        md += "\n\n" + real_photos_e2e.markdown(report["e2e"])
    (args.out / f"{slug}.md").write_text(f"# Real photographs: {runs[0]['name']}\n\n{md}\n")
    for r in runs:
        for name in ("jaffe", "lfw_students"):
            g = results[r["name"]]["groups"].get(name)
            if g:
                confusion_png(g["confusion"], f"{r['name']} on {name} (n={g['n']})",
                              args.out / f"confusion_{r['name'].replace(' ', '_')}_{name}.png")
    print(md)
    runs_line = "; ".join(f"{k}: {v['describe']}, {v['cpu_s']} CPU s" for k, v in results.items())
    print(f"# {len(photos)} photos; {runs_line}")
    print(f"# {machine_line()}; results in {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
