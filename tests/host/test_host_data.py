"""FER2013 loading: both layouts, gzip, every bad-row kind, caching, label mapping."""

from __future__ import annotations

import gzip
from pathlib import Path

import cv2
import numpy as np
import pytest
from fer_synth import synth_images, write_csv

from agent.contracts.labels import LABELS, label_index
from host_tools import data as fer_data
from host_tools.data import DataError

SHARED_CSV = Path(__file__).resolve().parents[3] / "shared/datasets/fer2013/fer2013_train_publictest.csv.gz"


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FER_CACHE_DIR", str(tmp_path / "cache"))


def _write_rows(path: Path, rows: list[str], header: str = "emotion,pixels,Usage") -> Path:
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def _row(label="3", pixels=None, usage="Training") -> str:
    pixels = pixels if pixels is not None else " ".join(["7"] * 2304)
    return f"{label},{pixels},{usage}"


def test_csv_and_gzip_give_the_same_arrays(tmp_path):
    plain = write_csv(tmp_path / "a.csv", {"Training": 21, "PublicTest": 14, "PrivateTest": 7})
    gz = write_csv(tmp_path / "a.csv.gz", {"Training": 21, "PublicTest": 14, "PrivateTest": 7})
    a, b = fer_data.load(plain), fer_data.load(gz)
    assert set(a.splits) == {"Training", "PublicTest", "PrivateTest"}
    for s in a.splits:
        np.testing.assert_array_equal(a.splits[s].x, b.splits[s].x)
        np.testing.assert_array_equal(a.splits[s].y, b.splits[s].y)
    x, y = synth_images(21, 0)
    np.testing.assert_array_equal(a.split("Training").x, x)
    np.testing.assert_array_equal(a.split("train").y, y)
    assert a.split("Training").x.shape == (21, 48, 48) and a.split("Training").x.dtype == np.uint8


@pytest.mark.parametrize(
    "row, needle",
    [
        (_row(pixels=" ".join(["1"] * 2303)), "pixels has 2303 values, expected 2304"),
        (_row(pixels=" ".join(["1"] * 2303 + ["x1"])), "pixel value 'x1' is not an integer"),
        (_row(pixels=" ".join(["1"] * 2303 + ["256"])), "pixel value 256 outside 0-255"),
        (_row(label="7"), "emotion 7 outside 0-6"),
        (_row(label="-1"), "emotion -1 outside 0-6"),
        (_row(label="happy"), "emotion 'happy' is not an integer"),
        (_row(usage="Validation"), "Usage 'Validation' is not one of"),
        ("3,1 2 3", "has 2 fields"),
    ],
)
def test_bad_row_is_named_with_file_and_row(tmp_path, row, needle):
    path = _write_rows(tmp_path / "bad.csv", [_row(), _row(), row, _row()])
    with pytest.raises(DataError) as err:
        fer_data.load(path)
    msg = str(err.value)
    assert f"{path}: row 4: " in msg and needle in msg and "--skip-bad-rows" in msg


def test_skip_bad_rows_counts_and_keeps_good_rows(tmp_path):
    path = _write_rows(tmp_path / "bad.csv", [_row(), _row(label="9"), _row(usage="PublicTest"), _row(pixels="1 2")])
    data = fer_data.load(path, skip_bad_rows=True)
    assert data.skipped == 2
    assert len(data.split("Training")) == 1 and len(data.split("PublicTest")) == 1
    assert "row 3" in data.skipped_examples[0]


def test_skip_summary_names_the_first_rows_and_counts_each_reason(tmp_path):
    bad = [_row(pixels="1 2"), _row(label="9"), _row(pixels="1 2 3"), _row(usage="Nope")]
    rows = [_row()] + bad * 4  # 16 bad rows at rows 3..18 (the header is row 1)
    path = _write_rows(tmp_path / "bad.csv", rows)
    data = fer_data.load(path, skip_bad_rows=True)
    summary = data.skip_summary()
    assert data.skipped == 16
    assert f"skipped 16 bad rows of {path} (rows 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, ... (6 more)): " in summary
    assert "8 without 2304 pixels, 4 with emotion outside 0-6, 4 with an unknown Usage" in summary
    cached = fer_data.load(path, skip_bad_rows=True)  # the second load comes from the cache: same summary
    assert cached.skip_summary() == summary and cached.skipped_examples == data.skipped_examples
    assert fer_data.load(_write_rows(tmp_path / "good.csv", [_row()])).skip_summary() == ""


def test_missing_column(tmp_path):
    path = _write_rows(tmp_path / "cols.csv", ["3,Training"], header="emotion,Usage")
    with pytest.raises(
        DataError,
        match=r"row 1: missing column\(s\) pixels \(expected header emotion,pixels,Usage, "
        r"got 'emotion,Usage'\)",
    ):
        fer_data.load(path)


def test_csv_without_header_line_is_one_short_line(tmp_path):
    path = tmp_path / "noheader.csv"
    path.write_text("\n".join([_row(), _row()]) + "\n")
    with pytest.raises(DataError) as err:
        fer_data.load(path)
    msg = str(err.value)
    assert msg.startswith(
        f"{path}: row 1: no header line; expected the first line to be emotion,pixels,Usage, "
        "got a data row ('3,7 7 7 7 7"
    )
    assert "... (4,618 characters))" in msg and len(msg) < len(str(path)) + 200 and "\n" not in msg


def test_long_bad_values_are_quoted_short(tmp_path):
    swapped = _write_rows(tmp_path / "swapped.csv", [f"{' '.join(['7'] * 2304)},3,Training"])
    with pytest.raises(DataError, match=r"row 2: emotion '7 7 7 .*\.\.\. \(4,607 characters\) is not an integer"):
        fer_data.load(swapped)
    huge = _write_rows(tmp_path / "huge.csv", [_row(pixels=" ".join(["1"] * 2303 + ["9" * 30]))])
    with pytest.raises(DataError, match=r"row 2: pixel value '9{30}' outside 0-255"):
        fer_data.load(huge)


def test_empty_split_and_empty_file(tmp_path):
    data = fer_data.load(_write_rows(tmp_path / "only_train.csv", [_row()]))
    with pytest.raises(DataError, match="split 'PublicTest' is empty or missing"):
        data.split("PublicTest")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(DataError, match="file is empty"):
        fer_data.load(tmp_path / "empty.csv")
    with pytest.raises(DataError, match="no such file"):
        fer_data.load(tmp_path / "missing.csv")


def test_corrupt_gzip_is_a_clear_error(tmp_path):
    path = tmp_path / "broken.csv.gz"
    path.write_bytes(gzip.compress(b"emotion,pixels,Usage\n3,1 2 3,Training\n")[:30])
    with pytest.raises(DataError, match="broken.csv.gz"):
        fer_data.load(path)


def test_cache_is_keyed_by_file_content(tmp_path):
    path = write_csv(tmp_path / "a.csv", {"Training": 14, "PublicTest": 7})
    first = fer_data.load(path)
    cached = list((tmp_path / "cache").glob("*.npz"))
    assert len(cached) == 1
    again = fer_data.load(path)
    np.testing.assert_array_equal(first.split("Training").x, again.split("Training").x)
    write_csv(path, {"Training": 7, "PublicTest": 7}, seed=5)  # same name, new content -> new key
    assert len(fer_data.load(path).split("Training")) == 7
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 2


def _write_folder_tree(root: Path, per_class: int = 2) -> None:
    x, _ = synth_images(per_class * len(LABELS))
    k = 0
    for split, names in (("train", LABELS), ("validation", ("Surprised", "happy"))):
        for name in names:
            d = root / split / name
            d.mkdir(parents=True)
            for j in range(per_class):
                ext = ".png" if j % 2 else ".jpg"
                img = x[k % len(x)] if split == "train" else cv2.resize(x[k % len(x)], (96, 96))
                cv2.imwrite(str(d / f"{k}{ext}"), img)
                k += 1


def test_folder_layout_with_aliases_and_resize(tmp_path):
    _write_folder_tree(tmp_path)
    data = fer_data.load(tmp_path)
    train, val = data.split("Training"), data.split("PublicTest")
    assert len(train) == 2 * len(LABELS) and train.class_counts() == [2] * len(LABELS)
    assert val.x.shape == (4, 48, 48)
    assert sorted(set(val.y.tolist())) == [label_index("happy"), label_index("surprise")]


def test_unreadable_image_named_or_skipped(tmp_path):
    _write_folder_tree(tmp_path)
    bad = tmp_path / "train" / "fear" / "broken.jpg"
    bad.write_bytes(b"not a jpeg")
    with pytest.raises(DataError, match=r"broken\.jpg: unreadable image"):
        fer_data.load(tmp_path)
    skipped = fer_data.load(tmp_path, skip_bad_rows=True)
    assert skipped.skipped == 1
    assert skipped.skip_summary() == f"skipped 1 bad file of {tmp_path} (file train/fear/broken.jpg): 1 unreadable"


def test_unknown_class_folder(tmp_path):
    (tmp_path / "train" / "bored").mkdir(parents=True)
    with pytest.raises(DataError, match="unknown emotion label 'bored'"):
        fer_data.load(tmp_path)


def test_label_order_is_fer2013():
    assert LABELS == ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
    assert [label_index(n) for n in ("Angry", "DISGUSTED", "fearful", "happy", "Sad", "surprised", "neutral")] == list(
        range(7)
    )
    with pytest.raises(KeyError):
        label_index("contempt")


@pytest.mark.data
@pytest.mark.skipif(not SHARED_CSV.exists(), reason=f"real FER2013 not present at {SHARED_CSV}")
def test_real_fer2013_counts():
    data = fer_data.load(SHARED_CSV)
    assert data.split("Training").class_counts() == [3995, 436, 4097, 7215, 4830, 3171, 4965]
    assert data.split("PublicTest").class_counts() == [467, 56, 496, 895, 653, 415, 607]
