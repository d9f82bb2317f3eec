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

ROOT = Path(__file__).resolve().parents[1]
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
    from agent.demo import astronaut_bgr, face_patch

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
