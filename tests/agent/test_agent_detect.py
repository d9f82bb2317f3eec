"""Face detectors on a real face (the astronaut) and on frames with no face."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from agent.boxes import iou as box_iou
from agent.boxes import iou_matrix
from agent.configio import build
from agent.contracts.errors import FerError
from agent.detectors import DetectorConfig, create_detector
from agent.detectors.blazeface import BLAZEFACE_OPTIONS, ssd_anchors, weighted_nms
from agent.detectors.haar import HaarDetector
from agent.synthetic import astronaut_bgr, background, grid_faces, grid_frame

DETECTORS = [("haar", "short"), ("blazeface", "short"), ("blazeface", "full")]


def section(**keys) -> DetectorConfig:
    """The ``detector:`` section as a file would give it (a detector's own options as a dict)."""
    return build(DetectorConfig, keys, "detector")


def run(det, frame):
    return det.detect(frame, cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY))


def matches(dets, truths):
    """Each true face has exactly one detection overlapping it well."""
    return all(sum(box_iou((d.box.x, d.box.y, d.box.w, d.box.h), t) > 0.4 for d in dets) == 1 for t in truths)


@pytest.mark.parametrize("kind, model", DETECTORS)
@pytest.mark.parametrize("n_faces", [1, 4])
def test_finds_the_real_faces(manifest, kind, model, n_faces):
    det = create_detector(section(type=kind, blazeface={"model": model}), manifest)
    frame = grid_frame(n_faces)
    dets = run(det, frame)
    assert len(dets) == n_faces
    assert matches(dets, grid_faces(n_faces))


@pytest.mark.parametrize("kind, model", DETECTORS)
def test_whole_astronaut_photo(manifest, kind, model):
    """The original photo (512x512, face upper middle) at full size: one face where the face is."""
    det = create_detector(section(type=kind, blazeface={"model": model}, detect_width=0), manifest)
    dets = run(det, astronaut_bgr())
    assert len(dets) == 1
    b = dets[0].box
    cx, cy = b.x + b.w / 2, b.y + b.h / 2
    assert 170 < cx < 290 and 40 < cy < 180, b


@pytest.mark.parametrize("kind, model", DETECTORS)
@pytest.mark.parametrize(
    "frame",
    [
        np.zeros((480, 640, 3), np.uint8),
        background(),
        np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8),
    ],
    ids=["black", "gradient", "noise"],
)
def test_no_face_no_box(manifest, kind, model, frame):
    det = create_detector(section(type=kind, blazeface={"model": model}), manifest)
    assert run(det, frame) == []


def test_min_face_and_max_faces(manifest):
    frame = grid_frame(4)
    assert len(run(HaarDetector(DetectorConfig(max_faces=2)), frame)) == 2
    assert run(HaarDetector(DetectorConfig(min_face=150)), frame) == []


def test_boxes_are_in_full_frame_pixels_whatever_the_detect_width(manifest):
    frame = grid_frame(1)
    a = run(HaarDetector(DetectorConfig(detect_width=0)), frame)[0].box
    b = run(HaarDetector(DetectorConfig(detect_width=320)), frame)[0].box
    assert box_iou((a.x, a.y, a.w, a.h), (b.x, b.y, b.w, b.h)) > 0.7


def test_mediapipe_anchor_counts():
    assert len(ssd_anchors(128, **{k: v for k, v in BLAZEFACE_OPTIONS["short"].items() if k != "input_size"})) == 896
    full = ssd_anchors(192, **{k: v for k, v in BLAZEFACE_OPTIONS["full"].items() if k != "input_size"})
    assert len(full) == 2304
    assert full[0].tolist() == pytest.approx([0.5 / 48, 0.5 / 48])
    short = ssd_anchors(128, (8, 16, 16, 16), 1.0)
    # 16x16 cells x 2 anchors, then 8x8 cells x 6 anchors (three layers share stride 16)
    assert short[0].tolist() == short[1].tolist() == pytest.approx([1 / 32, 1 / 32])
    assert short[512].tolist() == short[517].tolist() == pytest.approx([1 / 16, 1 / 16])


def test_weighted_nms_blends_overlapping_boxes():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], np.float32)
    scores = np.array([0.9, 0.3, 0.8], np.float32)
    out = weighted_nms(boxes, scores, 0.3)
    assert len(out) == 2
    blended, score = out[0]
    assert score == pytest.approx(0.9)
    assert blended[0] == pytest.approx(0.25)  # (0*0.9 + 1*0.3) / 1.2
    assert iou_matrix(boxes[:1], boxes[2:])[0, 0] == 0.0


def test_blazeface_needs_its_model_in_the_bundle(manifest, tmp_path):
    from dataclasses import replace

    stripped = replace(manifest, files={k: v for k, v in manifest.files.items() if not k.startswith("blazeface")})
    with pytest.raises(FerError, match="blazeface_short"):
        create_detector(DetectorConfig(type="blazeface"), stripped)


def test_yunet_needs_a_model_path():
    with pytest.raises(FerError, match="detector.yunet.model"):
        create_detector(DetectorConfig(type="yunet"), None)


def test_haar_finds_faces_down_to_min_face_despite_downscaling():
    """A ~40 px face: at detect_width 320 it would be 20 px, below Haar's 24 px window; min_face keeps it findable."""
    from agent.synthetic import face_patch, paste

    frame = background()
    paste(frame, face_patch(70), 300, 200)
    grey = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
    assert len(HaarDetector(DetectorConfig(min_face=24, detect_width=320)).detect(frame, grey)) == 1
    assert HaarDetector(DetectorConfig(min_face=48)).detect(frame, grey) == []  # below min_face: filtered


def test_haar_window_search_follows_faces_and_finds_new_ones_at_the_next_full_search():
    from agent.synthetic import face_patch, paste

    det = HaarDetector(section(haar={"full_frame_every": 3}))
    full = []
    search_frame = det._search_frame
    det._search_frame = lambda grey: full.append(len(full)) or search_frame(grey)

    def frame(x, second=False):
        f = background()
        paste(f, face_patch(200), x, 140)
        if second:
            paste(f, face_patch(160, flip=True), 460, 300)
        return f

    results = [
        run(det, frame(x, second)) for x, second in [(100, False), (110, False), (120, True), (130, True), (140, True)]
    ]
    assert len(full) == 2  # frames 1 and 4 searched whole; 2, 3 and 5 only around the faces
    assert [len(r) for r in results] == [1, 1, 1, 2, 2]  # the second face joins at the next whole search
    xs = [r[0].box.x for r in results[:3]]
    assert xs[0] < xs[1] < xs[2]  # the box follows the moving face inside its window
    whole = run(HaarDetector(DetectorConfig()), frame(140, True))
    assert [(d.box.w > 0) for d in results[-1]] == [True, True]
    assert matches(results[-1], [(d.box.x, d.box.y, d.box.w, d.box.h) for d in whole])


def test_tiles_find_a_face_too_small_for_the_whole_frame(manifest):
    """A 55 px face in 640x480 is ~11 px at BlazeFace's 128x128 input: missed whole, found in a 2x2 tile."""
    from agent.synthetic import face_in_patch, face_patch, paste

    frame = background().copy()
    paste(frame, face_patch(100), 100, 300)
    fx, fy, fw, fh = face_in_patch(100)
    truth = (100 + fx, 300 + fy, fw, fh)
    found = {}
    for tiles in (1, 2):
        det = create_detector(section(type="blazeface", blazeface={"tiles": tiles}), manifest)
        found[tiles] = det.detect(frame, cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY))
    assert found[1] == []
    (d,) = found[2]
    assert box_iou((d.box.x, d.box.y, d.box.w, d.box.h), truth) > 0.4
    # no face, no box: the tiles add no false positives on the background
    empty = background().copy()
    tiled = create_detector(section(type="blazeface", blazeface={"tiles": 2}), manifest)
    assert tiled.detect(empty, empty[:, :, 0]) == []


def test_tile_layout_covers_the_frame_with_overlap(manifest):
    det = create_detector(section(type="blazeface", blazeface={"tiles": 2}), manifest)
    tiles = det.tiling.tiles(640, 480)
    assert tiles == [(0, 0, 400), (240, 0, 400), (0, 80, 400), (240, 80, 400)]
    assert create_detector(section(type="blazeface", blazeface={"tiles": 1}), manifest).tiling.tiles(640, 480) == []
