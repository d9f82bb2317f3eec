"""benchmarks/real_photos.py: its scoring and placement on hand-made values, and whole runs.

The scoring, placement and table tests need nothing. The end-to-end test builds a tiny npz in the dev set's
layout from the public-domain astronaut photo (``skimage.data.astronaut()``, as the demo uses) and runs the
agent's real detector and classifier on it. The ``data`` test runs a few photos of the real dev set
(``../shared/datasets/realphotos-dev``; evaluation only) and skips without it.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
ANGRY, DISGUST, FEAR, HAPPY, SAD, SURPRISE, NEUTRAL = range(7)


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


rp = _load("real_photos")


def _photos(labels, sources, origins) -> object:
    n = len(labels)
    return rp.Photos(np.empty(n, object), np.asarray(labels, np.int64), np.asarray(sources), np.asarray(origins))


# --------------------------------------------------------------------------- scoring


def test_score_counts_a_face_not_found_as_wrong_but_not_in_of_found():
    label = np.array([HAPPY, HAPPY, SAD, SAD, NEUTRAL])
    pred = np.array([HAPPY, -1, HAPPY, SAD, NEUTRAL])
    s = rp.score(pred, label)
    assert s["n"] == 5 and s["found"] == 0.8
    assert s["accuracy"] == 0.6  # 3 right of 5: the photo with no face found is wrong
    assert s["accuracy_of_found"] == 0.75  # 3 right of the 4 found
    assert s["recall"] == {"happy": 0.5, "sad": 0.5, "neutral": 1.0}  # only the classes present
    assert s["macro_accuracy"] == round((0.5 + 0.5 + 1.0) / 3, 4)
    assert s["counts"] == {"happy": 2, "sad": 2, "neutral": 1}
    conf = np.array(s["confusion"])
    assert conf.shape == (7, 8) and conf.sum() == 5
    assert conf[HAPPY, HAPPY] == 1 and conf[HAPPY, 7] == 1  # last column: no face found
    assert conf[SAD, HAPPY] == 1 and conf[SAD, SAD] == 1 and conf[NEUTRAL, NEUTRAL] == 1


def test_score_with_no_face_found_at_all():
    s = rp.score(np.array([-1, -1]), np.array([FEAR, FEAR]))
    assert s["found"] == 0.0 and s["accuracy"] == 0.0 and s["accuracy_of_found"] is None
    assert s["macro_accuracy"] == 0.0 and np.array(s["confusion"])[FEAR, 7] == 2


def test_score_groups_split_by_source_and_by_origin_within_lfw_students():
    photos = _photos([HAPPY, SAD, HAPPY, DISGUST, ANGRY, NEUTRAL],
                     ["jaffe", "jaffe", "lfw_students", "lfw_students", "lfw_students", "lfw_students"],
                     ["jaffe", "jaffe", "lfw", "imfdb", "lfw", "other"])
    pred = np.array([HAPPY, HAPPY, HAPPY, DISGUST, -1, NEUTRAL])
    g = rp.score_groups(pred, photos)
    assert list(g) == ["jaffe", "lfw_students", "lfw_students/lfw", "lfw_students/imfdb"]
    assert g["jaffe"]["n"] == 2 and g["jaffe"]["accuracy"] == 0.5
    assert g["lfw_students"]["n"] == 4 and g["lfw_students"]["accuracy"] == 0.75  # 'other' counts in its source
    assert g["lfw_students"]["found"] == 0.75
    assert g["lfw_students/lfw"]["n"] == 2 and g["lfw_students/lfw"]["accuracy"] == 0.5
    assert g["lfw_students/imfdb"] == rp.score(np.array([DISGUST]), np.array([DISGUST]))


def test_score_groups_leaves_out_a_group_with_no_photos():
    g = rp.score_groups(np.array([HAPPY]), _photos([HAPPY], ["jaffe"], ["jaffe"]))
    assert list(g) == ["jaffe"]


# --------------------------------------------------------------------------- placement


def test_place_centres_a_small_photo_at_its_own_size():
    image = np.zeros((100, 60, 3), np.uint8)
    frame, rect = rp.place(image)
    assert frame.shape == (480, 640, 3) and frame.dtype == np.uint8
    assert rect == ((640 - 60) // 2, (480 - 100) // 2, 60, 100)
    x, y, w, h = rect
    assert (frame[y:y + h, x:x + w] == 0).all()
    outside = frame.copy()
    outside[y:y + h, x:x + w] = rp.BACKGROUND
    assert (outside == rp.BACKGROUND).all()


def test_place_shrinks_a_large_photo_to_fit_keeping_its_aspect():
    frame, rect = rp.place(np.full((960, 800, 3), 7, np.uint8))
    assert rect == ((640 - 400) // 2, 0, 400, 480)  # 480 / 960 = 0.5
    assert (frame[:, rect[0]:rect[0] + 400] == 7).all() and (frame[:, :rect[0]] == rp.BACKGROUND).all()
    wide = rp.place(np.full((300, 1280, 3), 7, np.uint8))[1]
    assert wide == (0, (480 - 150) // 2, 640, 150)


def test_inside_tests_the_box_centre_against_the_photo_rectangle():
    rect = (100, 50, 200, 100)  # x 100..299, y 50..149
    assert rp.inside((150, 60, 20, 20), rect)
    assert rp.inside((0, 0, 220, 120), rect)  # a big box whose centre (110, 60) is inside
    assert not rp.inside((0, 0, 100, 100), rect)  # centre (50, 50): left of the photo
    assert not rp.inside((290, 140, 20, 20), rect)  # centre (300, 150): just past the right and bottom edges
    assert rp.inside((280, 130, 38, 38), rect)  # centre (299, 149): the last pixel


# --------------------------------------------------------------------------- the table


def test_table_puts_models_side_by_side_with_per_class_recall():
    photos = _photos([HAPPY, SAD, HAPPY, SAD], ["jaffe", "jaffe", "lfw_students", "lfw_students"],
                     ["jaffe", "jaffe", "lfw", "lfw"])
    results = {"ours 1.0": {"groups": rp.score_groups(np.array([HAPPY, SAD, HAPPY, -1]), photos)},
               "fer 9": {"groups": rp.score_groups(np.array([SAD, SAD, -1, -1]), photos)}}
    md = rp.table(results)
    lines = md.splitlines()
    assert lines[0] == "| set | n | ours 1.0: accuracy (macro), found | fer 9: accuracy (macro), found |"
    assert "| jaffe | 2 | 100.0% (100.0%), 100% | 50.0% (50.0%), 100% |" in lines
    assert "| lfw_students | 2 | 50.0% (50.0%), 50% | 0.0% (0.0%), 0% |" in lines
    assert not any(line.startswith("| lfw_students/imfdb") for line in lines)  # no imfdb photo: no row
    assert "| jaffe | fer 9 | - | - | - | 0% (1) | 100% (1) | - | - |" in lines
    assert "| lfw_students/lfw | ours 1.0 | - | - | - | 100% (1) | 0% (1) | - | - |" in lines


# --------------------------------------------------------------------------- whole runs


def _encode(image: np.ndarray, ext: str) -> bytes:
    ok, buf = cv2.imencode(ext, image)
    assert ok
    return buf.tobytes()


def astronaut_npz(path: Path) -> Path:
    """A tiny dev set in the real one's layout: the astronaut as a JAFFE-like grey PNG, an LFW-like grey JPEG,
    an IMFDB-like small colour JPEG, and a photo with no face (flat grey)."""
    from agent.synthetic import astronaut_bgr, face_patch

    photo = astronaut_bgr()
    grey = cv2.cvtColor(cv2.cvtColor(photo, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)
    rows = [  # (encoded, label, source, origin, subject)
        (_encode(face_patch(256, photo=grey)[..., 0], ".png"), HAPPY, "jaffe", "jaffe", "AS"),
        (_encode(face_patch(350, photo=grey)[..., 0], ".jpg"), HAPPY, "lfw_students", "lfw", "Astronaut_Eileen"),
        (_encode(face_patch(160, photo=photo), ".jpg"), HAPPY, "lfw_students", "imfdb", "Astronaut"),
        (_encode(np.full((200, 200), 90, np.uint8), ".jpg"), NEUTRAL, "lfw_students", "lfw", "Nobody"),
    ]
    jpeg = np.empty(len(rows), object)
    jpeg[:] = [r[0] for r in rows]
    np.savez_compressed(path, jpeg=jpeg, label=np.array([r[1] for r in rows], np.int64),
                        source=np.array([r[2] for r in rows]), origin=np.array([r[3] for r in rows]),
                        subject=np.array([r[4] for r in rows]), classes=np.array(rp.LABELS))
    return path


def test_a_run_on_the_astronaut_finds_the_face_and_writes_json_and_markdown(tmp_path, capsys):
    data = astronaut_npz(tmp_path / "astronaut.npz")
    out = tmp_path / "out"
    assert rp.main(["--data", str(data), "--no-peer", "--out", str(out)]) == 0
    jsons = list(out.glob("*.json"))
    assert len(jsons) == 1
    report = json.loads(jsons[0].read_text())
    assert report["photos"] == 4 and report["frame"] == "640x480" and report["machine"]
    (name, ours), = report["results"].items()
    g = ours["groups"]
    assert g["jaffe"]["found"] == 1.0 and g["lfw_students/lfw"]["found"] == 0.5  # the astronaut, not the grey card
    assert g["lfw_students/imfdb"]["found"] == 1.0
    assert g["lfw_students"]["n"] == 3 and np.array(g["lfw_students"]["confusion"])[NEUTRAL, 7] == 1
    md = jsons[0].with_suffix(".md").read_text()
    assert md.startswith(f"# Real photographs: {name}") and "| jaffe | 1 |" in md and "| lfw_students | 3 |" in md
    assert name in capsys.readouterr().out


def test_a_missing_data_file_is_one_clear_line(tmp_path):
    with pytest.raises(SystemExit) as exc:
        rp.main(["--data", str(tmp_path / "nope.npz"), "--no-peer", "--out", str(tmp_path)])
    assert str(exc.value).startswith(f"{tmp_path / 'nope.npz'}: real-photo dev set not found")


@pytest.mark.data
def test_a_few_photos_of_the_real_dev_set(tmp_path):
    if not rp.DEFAULT_DATA.is_file():
        pytest.skip(f"real-photo dev set not found: {rp.DEFAULT_DATA}")
    assert rp.main(["--limit", "5", "--no-peer", "--out", str(tmp_path)]) == 0
    report = json.loads(next(tmp_path.glob("*.json")).read_text())
    assert report["photos"] == 10 and report["limit"] == 5
    g = next(iter(report["results"].values()))["groups"]
    assert g["jaffe"]["n"] == 5 and g["lfw_students"]["n"] == 5
    assert g["jaffe"]["found"] >= 0.8  # frontal studio portraits


# --------------------------------------------------------------------------- the one-seat form through fer-agent run


def _e2e():
    return _load("real_photos_e2e")


def test_sample_takes_n_per_source_with_a_fixed_seed_and_changes_label_at_every_hold():
    labels = np.random.default_rng(3).integers(0, 7, 60)
    photos = _photos(labels, ["jaffe"] * 20 + ["lfw_students"] * 40, ["jaffe"] * 20 + ["lfw"] * 40)
    e2e = _e2e()
    idx = e2e.sample(photos, 15)
    assert len(idx) == 30 and len(set(idx.tolist())) == 30
    assert (photos.source[idx] == "jaffe").sum() == 15 and (photos.source[idx] == "lfw_students").sum() == 15
    assert all(a != b for a, b in zip(photos.label[idx], photos.label[idx][1:], strict=False))
    assert (e2e.sample(photos, 15) == idx).all() and not (e2e.sample(photos, 15, seed=1) == idx).all()
    assert len(e2e.sample(photos, 1000)) == 60  # a source with fewer photos gives all of them
    same = _photos([HAPPY] * 3, ["jaffe"] * 3, ["jaffe"] * 3)
    assert sorted(e2e.sample(same, 5).tolist()) == [0, 1, 2]  # one label only: the order cannot change it


def test_agent_predictions_need_the_photos_face_seen_during_its_hold():
    e2e = _e2e()
    Hold, Ev = e2e.Hold, e2e.Ev
    rect = (145, 65, 350, 350)
    holds = [Hold("seat", i, lab, 15 + 15 * i, 15, rect) for i, lab in enumerate([HAPPY, SAD, ANGRY, NEUTRAL])]
    face, elsewhere = (250, 150, 140, 160), (0, 0, 100, 100)
    tracks = {
        1: [Ev(17, "appeared", "happy", face), Ev(18, "update", "happy", face), Ev(29, "update", "happy", face),
            # hold 1 (30..44): not seen again, so the dashboard still shows 'happy' from the photo before
            Ev(45, "left", "happy", face)],
        2: [Ev(47, "appeared", "sad", face), Ev(50, "changed", "angry", face), Ev(59, "update", "angry", face),
            Ev(75, "left", "angry", face)],  # hold 2 (45..59): seen, 'angry' at the end
        3: [Ev(62, "appeared", "neutral", elsewhere)],  # hold 3: a face outside the photo finds nothing ...
    }  # ... while track 2 has not left yet: the dashboard shows hold 2's 'angry' at the end of hold 3
    pred, stale = e2e.agent_predictions(holds, tracks)
    assert pred.tolist() == [HAPPY, -1, ANGRY, -1]
    assert stale == 2  # holds 1 and 3 showed an earlier photo's label


def test_peer_predictions_take_the_last_frame_that_found_a_face_inside_the_photo():
    e2e = _e2e()
    rect = (100, 100, 200, 200)
    holds = [e2e.Hold("seat", i, HAPPY, 3 * i, 3, rect) for i in range(3)]
    small, big, outside = (150, 150, 40, 40), (120, 120, 150, 150), (400, 300, 100, 100)
    frames = [
        [(big, "sad")], [(big, "happy"), (small, "fear")], [],  # last frame with a face: 1, largest: happy
        [(big, "sad")], [(outside, "angry")], [(small, "fear")],  # last frame: 5, fear
        [(outside, "angry")], [], [],  # only outside the photo: not found
    ]
    assert e2e.peer_predictions(holds, frames).tolist() == [HAPPY, FEAR, -1]


@pytest.mark.slow
def test_one_seat_run_of_the_astronaut_through_fer_agent_run(tmp_path):
    from conftest import MOSQUITTO

    if MOSQUITTO is None:
        pytest.skip("mosquitto binary not found (Debian package mosquitto)")
    data = astronaut_npz(tmp_path / "astronaut.npz")
    out = tmp_path / "out"
    assert rp.main(["--data", str(data), "--no-peer", "--e2e", "3", "--out", str(out)]) == 0
    report = json.loads(next(out.glob("*.json")).read_text())
    e2e = report["e2e"]
    assert e2e["per_source"] == 3 and e2e["photos"] == 4 and e2e["seconds"] == pytest.approx(5.5)
    (name, ours), = e2e["results"].items()
    assert name.startswith("fer-agent run: ") and ours["events"] > 0
    assert ours["frames"] + ours["dropped_frames"] == 83  # 1 s lead + 4 holds of 15 frames + 0.5 s tail
    g = ours["groups"]
    assert g["jaffe"]["found"] == 1.0 and g["lfw_students/imfdb"]["found"] == 1.0
    assert g["lfw_students/lfw"]["found"] == 0.5  # the astronaut, not the grey card
    assert np.array(g["lfw_students"]["confusion"])[NEUTRAL, 7] == 1
    md = next(out.glob("*.md")).read_text()
    assert "## One seat through `fer-agent run` (3 photos per source, seed 0)" in md
