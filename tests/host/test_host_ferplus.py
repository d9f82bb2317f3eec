"""FER+ crowd votes as training targets, and fine-tuning from a shipped bundle's weights.

The votes file is written here in the layout of ``ferplus_train_publictest.csv.gz`` for the synthetic
FER2013 file of :mod:`fer_synth` (never real rows).
"""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path

import numpy as np
import pytest
from fer_synth import synth_images, write_csv

from agent.contracts.errors import FerError
from host_tools import ferplus

COLS = ["row", "Usage", "emotion", "neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear",
        "contempt", "unknown", "NF", "match_dist"]
# FER2013 class index -> the FER+ column that votes for it
FERPLUS_COLUMN = {0: "anger", 1: "disgust", 2: "fear", 3: "happiness", 4: "sadness", 5: "surprise", 6: "neutral"}


def write_votes(path: Path, splits: dict[str, int], seed: int = 0, not_faces: int = 0) -> Path:
    """Votes agreeing with each synthetic row's label (8 of 10), 2 votes elsewhere; the first ``not_faces``
    Training rows are voted not-a-face."""
    rows, r = [], 0
    for k, (usage, n) in enumerate(splits.items()):
        _, y = synth_images(n, seed + k)
        for i, label in enumerate(y):
            votes = dict.fromkeys(COLS[3:13], 0)
            votes[FERPLUS_COLUMN[int(label)]] = 8
            votes["neutral" if label != 6 else "sadness"] += 2
            if usage == "Training" and i < not_faces:
                votes = {**dict.fromkeys(COLS[3:13], 0), "NF": 10}
            rows.append([r, usage, int(label), *votes.values(), "0.001"])
            r += 1
    with gzip.open(path, "wt", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(COLS)
        w.writerows(rows)
    return path


def _votes(counts: list[list[int]], emotion: list[int]) -> ferplus.Votes:
    return ferplus.Votes(np.asarray(counts, np.float32), np.asarray(emotion))


#                 anger disgust fear happy sad surprise neutral contempt unknown NF
HAPPY_MOSTLY = [0, 0, 0, 8, 0, 0, 2, 0, 0, 0]
UNKNOWN_MOST = [0, 0, 0, 2, 0, 0, 2, 1, 5, 0]
NOT_A_FACE = [0, 0, 0, 0, 0, 0, 0, 0, 0, 10]
CONTEMPT_ONLY = [0, 0, 0, 0, 0, 0, 0, 10, 0, 0]
SPLIT_VOTE = [3, 0, 0, 0, 3, 0, 0, 4, 0, 0]  # contempt leads, but its votes are dropped


def test_targets_are_the_vote_distribution_over_usable_rows():
    v = _votes([HAPPY_MOSTLY, UNKNOWN_MOST, NOT_A_FACE, CONTEMPT_ONLY, SPLIT_VOTE], [3, 3, 6, 6, 0])
    np.testing.assert_array_equal(ferplus.usable(v), [True, False, False, False, True])
    t, keep = ferplus.targets(v, v.emotion)
    np.testing.assert_allclose(t[0], [0, 0, 0, 0.8, 0, 0, 0.2], atol=1e-6)
    np.testing.assert_allclose(t[1], [0.5, 0, 0, 0, 0.5, 0, 0], atol=1e-6)  # contempt dropped, renormalised
    half, _ = ferplus.targets(v, v.emotion, weight=0.5)
    np.testing.assert_allclose(half[0], [0, 0, 0, 0.9, 0, 0, 0.1], atol=1e-6)
    np.testing.assert_allclose(half.sum(1), 1.0, atol=1e-6)
    with pytest.raises(ValueError, match="weight"):
        ferplus.targets(v, v.emotion, weight=1.5)


def test_load_and_alignment_checks(tmp_path):
    path = write_votes(tmp_path / "votes.csv.gz", {"Training": 20, "PublicTest": 7})
    votes = ferplus.load(path)
    assert set(votes) == {"Training", "PublicTest"} and len(votes["Training"]) == 20
    _, y = synth_images(20, 0)
    ferplus.check_aligned(votes["Training"], y, "Training", path)
    with pytest.raises(FerError, match="20 Training rows, the data set has 19"):
        ferplus.check_aligned(votes["Training"], y[:19], "Training", path)
    shifted = np.roll(y, 1)
    with pytest.raises(FerError, match=r"Training row \d+: emotion \d differs"):
        ferplus.check_aligned(votes["Training"], shifted, "Training", path)


def test_bad_votes_files_get_one_line(tmp_path):
    with pytest.raises(FerError, match="FER\\+ votes file not found"):
        ferplus.load(tmp_path / "missing.csv.gz")
    bad = tmp_path / "bad.csv"
    bad.write_text("row,Usage,emotion,neutral\n0,Training,3,x\n")
    with pytest.raises(FerError, match="missing column"):
        ferplus.load(bad)
    bad.write_text(",".join(COLS) + "\n" + "0,Training,3,1,x,0,0,0,0,0,0,0,0,0\n")
    with pytest.raises(FerError, match=r"bad.csv: row 2: vote counts and emotion must be integers"):
        ferplus.load(bad)


@pytest.mark.slow
def test_training_on_votes_drops_unusable_rows_and_records_it(tmp_path):
    pytest.importorskip("tensorflow", reason="host tests need the `host` extra (TensorFlow)")
    from host_tools.augment import AugmentConfig
    from host_tools.train import TrainConfig, train

    data = write_csv(tmp_path / "synth.csv.gz", {"Training": 140, "PublicTest": 35})
    write_votes(tmp_path / ferplus.FILE_NAME, {"Training": 140, "PublicTest": 35}, not_faces=9)
    summary = train(TrainConfig(data=str(data), out=str(tmp_path / "run"), epochs=1, batch_size=32,
                                widths=(4, 4), convs=(1, 1), labels="ferplus", ferplus_weight=0.5,
                                augment=AugmentConfig(camera_prob=1.0, aspect=0.1)))
    assert summary["train_rows"] == 131  # 9 not-a-face rows dropped
    assert summary["config"]["labels"] == "ferplus" and summary["config"]["augment"]["camera_prob"] == 1.0
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["train_rows"] == 131


def test_cli_refuses_votes_for_another_file(tmp_path, capsys):
    pytest.importorskip("tensorflow", reason="host tests need the `host` extra (TensorFlow)")
    from host_tools.cli import main

    data = write_csv(tmp_path / "synth.csv.gz", {"Training": 30, "PublicTest": 7})
    write_votes(tmp_path / "other.csv.gz", {"Training": 30, "PublicTest": 7}, seed=5)
    code = main(["train", "--data", str(data), "--out", str(tmp_path / "r"), "--epochs", "1", "--labels", "ferplus",
                 "--ferplus", str(tmp_path / "other.csv.gz")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "other.csv.gz: Training row" in err[0] and "differs" in err[0]


@pytest.mark.slow
def test_bundle_weights_rebuild_the_shipped_network(manifest):
    pytest.importorskip("tensorflow", reason="host tests need the `host` extra (TensorFlow)")
    from host_tools import tflite_eval
    from host_tools.bundle_weights import bundle_weights
    from host_tools.model import build_model

    widths, convs = (32, 64, 128, 192), (1, 2, 2, 2)  # the default bundle's shape
    weights, got = bundle_weights(manifest.root, lambda: build_model(widths, convs=convs))
    assert got.input.normalization == manifest.input.normalization
    model = build_model(widths, convs=convs)
    model.set_weights(weights)
    x = np.random.default_rng(1).normal(size=(6, 48, 48, 1)).astype(np.float32)
    views = model.predict(x, verbose=0)
    if len(manifest.to_dict()["model"].get("views", ["face"])) > 1:  # a flip-averaged bundle
        views = (views + model.predict(x[:, :, ::-1], verbose=0)) / 2
    np.testing.assert_allclose(views, tflite_eval.predict(manifest.path_of("tflite"), x), atol=1e-4)
    with pytest.raises(FerError, match="the bundle's network has another shape"):
        bundle_weights(manifest.root, lambda: build_model((32, 64, 128, 256), convs=convs))


def test_camera_and_label_settings_are_checked_before_the_data_is_read(tmp_path, capsys):
    pytest.importorskip("tensorflow", reason="host tests need the `host` extra (TensorFlow)")
    from host_tools.cli import main

    missing = str(tmp_path / "no.csv")  # never read: the flags fail first
    for flags, message in ((["--camera-prob", "2"], "--camera-prob must be in [0, 1]"),
                           (["--labels", "ferplus", "--ferplus-weight", "1.5"], "--ferplus-weight must be in [0, 1]"),
                           (["--labels", "ferplus"], "FER+ votes file not found")):
        assert main(["train", "--data", missing, "--out", str(tmp_path / "r"), *flags]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err
