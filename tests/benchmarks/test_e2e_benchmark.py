"""benchmarks/e2e_accuracy.py: its scoring on hand-made events and frames, and a --quick run end to end.

The scoring tests need no data; the end-to-end one plays a few PublicTest faces to the real
``fer-agent run`` against a real mosquitto and checks the result files' shape.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest
from conftest import MOSQUITTO

ROOT = Path(__file__).resolve().parents[2]
SHARED_CSV = ROOT.parent / "shared/datasets/fer2013/fer2013_train_publictest.csv.gz"


def _load():
    spec = importlib.util.spec_from_file_location("e2e_accuracy", ROOT / "benchmarks" / "e2e_accuracy.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["e2e_accuracy"] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


e2e = _load()
Hold, Ev = e2e.Hold, e2e.Ev
HAPPY, SAD, NEUTRAL, ANGRY = 3, 4, 6, 0


def ev(frame: int, type_: str, label: str, box=(100, 100, 150, 150)) -> Ev:
    return Ev(frame, type_, label, box)


def test_random_places_found_right_wrong_and_missed():
    holds = [
        Hold("random", 0, HAPPY, 15, 15, (100, 100, 150, 150)),  # found, right
        Hold("random", 1, SAD, 30, 15, (400, 250, 150, 150)),  # found, wrong
        Hold("random", 2, NEUTRAL, 45, 15, (50, 300, 150, 150)),  # never in an event: missed
    ]
    tracks = {
        1: [ev(16, "appeared", "neutral"), ev(22, "changed", "happy"), ev(45, "left", "happy")],
        # right label only after the hold ended: too late, the dashboard showed 'angry' at the end
        2: [ev(31, "appeared", "angry", (410, 260, 140, 140)), ev(46, "changed", "sad", (410, 260, 140, 140))],
        # a false detection elsewhere during hold 3 does not find it
        3: [ev(47, "appeared", "neutral", (500, 0, 100, 100))],
    }
    s = e2e.score_agent(holds, tracks, "random")
    assert [p["found"] for p in s["per_face"]] == [True, True, False]
    assert [p["label"] for p in s["per_face"]] == ["happy", "angry", None]
    assert s["found"] == pytest.approx(2 / 3, abs=1e-4)
    assert s["right_of_all"] == pytest.approx(1 / 3, abs=1e-4)
    assert s["right_of_found"] == pytest.approx(0.5)


def test_a_box_that_overlaps_too_little_is_not_found():
    holds = [Hold("random", 0, HAPPY, 0, 15, (0, 0, 100, 100))]
    # IoU of (50, 50, 100, 100) with (0, 0, 100, 100) = 2500 / 17500 = 0.14 < 0.3
    s = e2e.score_agent(holds, {1: [ev(2, "appeared", "happy", (50, 50, 100, 100))]}, "random")
    assert s["found"] == 0.0 and s["right_of_found"] is None


def test_one_seat_end_of_hold_and_change_latency():
    seat = e2e.SEAT_BOX
    holds = [Hold("seat", i, lab, 100 + 15 * i, 15, seat) for i, lab in enumerate([HAPPY, SAD, NEUTRAL, ANGRY])]
    tracks = {
        7: [
            ev(101, "appeared", "happy", seat),  # hold 0: right on its 2nd frame
            ev(120, "changed", "sad", seat),  # hold 1 (115..129): right after 6 frames
            # hold 2 (130..144): never says neutral, still shows sad at the end
            ev(146, "left", "sad", seat),  # gone before hold 3 (145..159) ends
        ],
    }
    s = e2e.score_agent(holds, tracks, "seat")
    per = s["per_face"]
    assert [p["label"] for p in per] == ["happy", "sad", "sad", None]
    assert [p["right"] for p in per] == [True, True, False, False]
    assert [p["latency_s"] for p in per] == [pytest.approx(2 / 15, abs=1e-3), pytest.approx(6 / 15, abs=1e-3),
                                             None, None]
    assert s["end_of_hold_right"] == 0.5 and s["found"] == 0.75 and s["reached"] == 0.5
    assert s["change_to_right_median_s"] == pytest.approx((2 / 15 + 6 / 15) / 2, abs=1e-3)


def test_one_seat_already_showing_the_new_label_counts_as_zero():
    seat = e2e.SEAT_BOX
    holds = [Hold("seat", 0, HAPPY, 0, 15, seat), Hold("seat", 1, SAD, 15, 15, seat)]
    tracks = {1: [ev(1, "appeared", "sad", seat)]}  # wrong for hold 0, right by luck for hold 1
    s = e2e.score_agent(holds, tracks, "seat")
    assert [p["right"] for p in s["per_face"]] == [False, True]
    assert [p["latency_s"] for p in s["per_face"]] == [None, 0.0]


def test_peer_scoring_uses_the_last_frame_of_the_hold():
    box = (100, 100, 150, 150)
    holds = [Hold("random", i, lab, 3 * i, 3, box) for i, lab in enumerate([HAPPY, SAD, ANGRY])]
    frames = [
        [(box, "sad")], [(box, "happy")], [],  # found, last = happy: right
        [(box, "sad")], [(box, "sad")], [(box, "fear")],  # found, last = fear: wrong (majority sad would be right)
        [((400, 300, 100, 100), "angry")], [], [],  # elsewhere only: missed
    ]
    s = e2e.score_peer(holds, frames, "random")
    assert [p["label"] for p in s["per_face"]] == ["happy", "fear", None]
    assert [p["majority"] for p in s["per_face"]] == ["happy", "sad", None]
    assert s["found"] == pytest.approx(2 / 3, abs=1e-4) and s["right_of_all"] == pytest.approx(1 / 3, abs=1e-4)
    seat = e2e.score_peer(holds, frames, "seat")
    assert [p["latency_s"] for p in seat["per_face"]] == [pytest.approx(2 / 15, abs=1e-3),
                                                          pytest.approx(1 / 15, abs=1e-3), None]


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def test_events_map_to_clip_frames_even_after_dropped_frames():
    t0, fps = 1_800_000_000.0, e2e.FPS
    box = {"x": 0.25, "y": 0.25, "w": 0.25, "h": 0.25}
    # 3 frames dropped at the start: clip frame 3 was the agent's first processed frame
    msgs = [
        {"type": "appeared", "face_id": 1, "label": "happy", "box": box, "frame": 14,
         "capture_time": _iso(t0 + 16 / fps)},
        {"type": "left", "face_id": 1, "label": "happy", "box": box, "frame": 43, "capture_time": _iso(t0 + 45 / fps)},
        {"time": _iso(t0 + 99 / fps), "frame": 97, "faces": []},  # the final state: 97 processed + 3 dropped
    ]
    tracks, start = e2e.events_to_tracks(msgs, dropped=3)
    assert start == pytest.approx(t0, abs=2e-3)
    assert [(e.frame, e.type) for e in tracks[1]] == [(16, "appeared"), (45, "left")]
    assert tracks[1][0].box == pytest.approx((160, 120, 160, 120))


def test_plan_changes_place_and_expression():
    labels = np.random.default_rng(1).integers(0, 7, 500)
    plan = e2e.plan_clip(labels, 20, 20, seed=0)
    assert plan == e2e.plan_clip(labels, 20, 20, seed=0)  # the seed fixes the clip
    rnd, seat = plan.scene("random"), plan.scene("seat")
    assert len(rnd) == len(seat) == 20 and len({h.row for h in plan.holds}) == 40
    for a, b in zip(rnd, rnd[1:], strict=False):
        assert e2e.iou(a.box, b.box) == 0.0 and b.first == a.end
        assert 120 <= a.box[2] <= 200 and a.box[0] + a.box[2] <= 640 and a.box[1] + a.box[3] <= 480
    assert all(h.box == e2e.SEAT_BOX for h in seat)
    assert all(a.label != b.label for a, b in zip(seat, seat[1:], strict=False))
    assert seat[0].first - rnd[-1].end > e2e.FPS  # every track has left before the seat scene
    assert plan.frames >= seat[-1].end


@pytest.mark.data
@pytest.mark.slow
def test_quick_run_against_the_real_agent_and_mosquitto(tmp_path):
    if not SHARED_CSV.exists():
        pytest.skip(f"FER2013 file not found: {SHARED_CSV}")
    if MOSQUITTO is None:
        pytest.skip("mosquitto binary not found (Debian package mosquitto)")
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "e2e_accuracy.py"), "--quick", "--data",
                           str(SHARED_CSV), "--out", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    result = json.loads((tmp_path / "e2e_accuracy.json").read_text())
    assert {"date", "machine", "command", "seed", "faces_per_scene", "clip", "default_detector", "targets",
            "rows"} <= set(result)
    assert result["faces_per_scene"] == e2e.QUICK_FACES and len(result["rows"]) == 1
    row = result["rows"][0]
    assert row["configuration"].startswith("`fer-agent run` default")
    assert row["frames"] + row["dropped_frames"] == result["clip"]["frames"]
    assert row["cpu_ms_per_frame"] > 0 and row["events"] > 0
    for scene in ("random", "seat"):
        assert row[scene]["faces"] == e2e.QUICK_FACES and "per_face" not in row[scene]
        assert 0.0 <= row[scene]["found"] <= 1.0 and 0.0 <= row[scene]["right_of_all"] <= row[scene]["found"]
    assert "end_of_hold_right" in row["seat"] and "reached" in row["seat"]
    md = (tmp_path / "e2e_accuracy.md").read_text()
    assert "| configuration | faces found |" in md and result["machine"] in md
