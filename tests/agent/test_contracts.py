"""The shared contracts in agent/: manifest, raw tensors and input lists, normalisation."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest

from agent.contracts.errors import FerError, ManifestError
from agent.contracts.manifest import load_manifest, parse_manifest
from agent.contracts.preprocess import Box, face_tensor, image_tensor, normalize, square_crop
from agent.contracts.rawtensor import parse_input_list, read_raw, result_path, write_input_list, write_raw

DEFAULT_BUNDLE = Path(__file__).resolve().parents[2] / "agent" / "models" / "default"


def _manifest_dict() -> dict:
    return json.loads((DEFAULT_BUNDLE / "manifest.json").read_text())


def test_default_bundle_manifest_loads_and_verifies():
    m = load_manifest(DEFAULT_BUNDLE)
    assert m.input.shape == (1, 48, 48, 1) and m.input.layout == "NHWC" and m.input.dtype == "float32"
    assert m.output.kind == "probabilities"
    assert {"tflite", "tflite_int8", "frozen_graph"} <= set(m.files)
    assert 0 < m.input.normalization.std < 1 and 0 < m.input.normalization.mean < 1
    assert m.to_dict()["files"]["tflite"]["sha256"] == _manifest_dict()["files"]["tflite"]["sha256"]


def test_tampered_file_fails_sha256(tmp_path):
    bundle = tmp_path / "b"
    bundle.mkdir()
    for name in ("manifest.json", "model.tflite"):
        (bundle / name).write_bytes((DEFAULT_BUNDLE / name).read_bytes())
    raw = _manifest_dict()
    raw["files"] = {"tflite": raw["files"]["tflite"]}
    (bundle / "manifest.json").write_text(json.dumps(raw))
    load_manifest(bundle)  # intact: fine
    data = bytearray((bundle / "model.tflite").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (bundle / "model.tflite").write_bytes(bytes(data))
    with pytest.raises(ManifestError, match=r"model\.tflite: sha256 mismatch for files\.tflite"):
        load_manifest(bundle)
    (bundle / "model.tflite").unlink()  # absent files are not checked at load, only when named
    m = load_manifest(bundle)
    assert m.missing() == ["tflite"]
    with pytest.raises(ManifestError, match=r"files\.tflite: .*does not exist"):
        m.verify(["tflite"])


@pytest.mark.parametrize(
    "mutate, needle",
    [
        (lambda d: d.pop("labels"), "missing key labels"),
        (lambda d: d.__setitem__("labels", list(reversed(d["labels"]))), "key labels must be"),
        (lambda d: d["input"]["normalization"].pop("std"), "missing key input.normalization.std"),
        (lambda d: d["input"]["normalization"].__setitem__("std", 0), "input.normalization.std must be > 0"),
        (lambda d: d["input"].__setitem__("shape", [1, 48, 48, 3]), "key input.shape must be"),
        (lambda d: d["input"].__setitem__("layout", "NCHW"), "input.layout must be NHWC"),
        (lambda d: d["output"].__setitem__("kind", "scores"), "output.kind must be"),
        (lambda d: d["output"].__setitem__("shape", [1, 6]), "key output.shape must be [N, 7] (one score per label)"),
        (lambda d: d["output"].__setitem__("shape", [7]), "key output.shape must be [N, 7]"),
        (lambda d: d["output"].__setitem__("shape", [0, 7]), "key output.shape must be [N, 7]"),
        (lambda d: d["output"].__setitem__("shape", "1x7"), "got '1x7'"),
        (lambda d: d.__setitem__("format_version", 99), "format_version 99 is not supported"),
        (lambda d: d["files"]["tflite"].__setitem__("path", "../evil.tflite"), "must be relative to the bundle"),
        (lambda d: d["model"].__setitem__("name", 5), "key model.name has wrong type int"),
    ],
)
def test_manifest_errors_name_the_key(mutate, needle):
    raw = copy.deepcopy(_manifest_dict())
    mutate(raw)
    with pytest.raises(ManifestError, match="manifest.json") as err:
        parse_manifest(raw, where="bundle/manifest.json")
    assert needle in str(err.value)


def test_manifest_not_json(tmp_path):
    (tmp_path / "manifest.json").write_text("{oops")
    with pytest.raises(ManifestError, match=r"not valid JSON \(line 1"):
        load_manifest(tmp_path)
    with pytest.raises(ManifestError, match="manifest not found"):
        load_manifest(tmp_path / "nope")


def test_raw_tensor_is_bare_float32_le_nhwc(tmp_path):
    t = np.arange(48 * 48, dtype=np.float32).reshape(48, 48, 1) / 7
    p = write_raw(tmp_path / "face.raw", t)
    blob = p.read_bytes()
    assert len(blob) == 48 * 48 * 4
    assert blob[:8] == np.array([0.0, 1 / 7], dtype="<f4").tobytes()
    # NHWC: the 49th value is row 1, column 0.
    assert np.frombuffer(blob[48 * 4 : 49 * 4], "<f4")[0] == pytest.approx(48 / 7)
    np.testing.assert_array_equal(read_raw(p, (1, 48, 48, 1))[0], t)
    with pytest.raises(FerError, match="holds 9216 bytes, expected 36864 for shape"):
        read_raw(p, (1, 96, 96, 1))


def test_input_list_round_trip_and_multi_input(tmp_path):
    lst = write_input_list(tmp_path / "in.txt", ["/w/a.raw", "/w/b.raw"], output_names=["probabilities"])
    assert lst.read_text() == "#probabilities\n/w/a.raw\n/w/b.raw\n"
    pct = write_input_list(
        tmp_path / "pct.txt", [{"input": "/w/a.raw", "mask": "/w/m.raw"}], ["probabilities"], mark="%"
    )
    assert pct.read_text() == "%probabilities\ninput:=/w/a.raw mask:=/w/m.raw\n"
    assert parse_input_list(pct).entries == [{"input": "/w/a.raw", "mask": "/w/m.raw"}]
    parsed = parse_input_list(lst)
    assert parsed.output_names == ["probabilities"] and parsed.paths() == ["/w/a.raw", "/w/b.raw"]
    (tmp_path / "multi.txt").write_text(
        "#out1 out2\ninput:=/w/a.raw mask:=/w/m.raw\n\ninput:=/w/b.raw mask:=/w/n.raw\n"
    )
    multi = parse_input_list(tmp_path / "multi.txt")
    assert multi.entries[1] == {"input": "/w/b.raw", "mask": "/w/n.raw"} and multi.output_names == ["out1", "out2"]
    (tmp_path / "late.txt").write_text("/w/a.raw\n#out\n")
    with pytest.raises(FerError, match=r"late\.txt:2: '#' output-name line must be the first line"):
        parse_input_list(tmp_path / "late.txt")
    assert result_path("/o", 3, "probabilities") == Path("/o/Result_3/probabilities.raw")


def test_normalisation_formula_and_face_path_agree():
    m = load_manifest(DEFAULT_BUNDLE, verify=False)
    norm = m.input.normalization
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)
    box = Box(40, 30, 48, 48)
    x0, y0, x1, y1 = square_crop(box, 160, 120)
    assert (x0, y0, x1, y1) == (40, 30, 88, 78)
    via_face = face_tensor(frame, box, m.input)
    via_image = image_tensor(frame[y0:y1, x0:x1], m.input)
    np.testing.assert_array_equal(via_face, via_image)  # same bytes both ways
    grey = via_image  # independent numpy computation of (pixel/255 - mean)/std
    import cv2

    pix = cv2.cvtColor(frame[y0:y1, x0:x1], cv2.COLOR_BGR2GRAY).astype(np.float32)
    np.testing.assert_allclose(grey[:, :, 0], (pix / 255 - norm.mean) / norm.std, rtol=0, atol=1e-6)
    out = np.empty((48, 48), np.float32)
    assert normalize(pix.astype(np.uint8), norm, out=out) is out


def test_square_crop_clips_to_frame():
    assert square_crop(Box(0, 0, 20, 40), 100, 100) == (0, 0, 30, 40)  # square of side 40, clipped left
    assert square_crop(Box(90, 10, 20, 20), 100, 100, margin=0.25) == (85, 5, 100, 35)
    with pytest.raises(ValueError, match="outside"):
        square_crop(Box(200, 200, 10, 10), 100, 100)


def test_manifest_output_shape_is_optional_and_defaults_to_one_row_per_label():
    raw = copy.deepcopy(_manifest_dict())
    raw["output"].pop("shape")
    assert parse_manifest(raw).output.shape == (1, 7)
    raw["output"]["shape"] = [4, 7]
    assert parse_manifest(raw).output.shape == (4, 7)


def test_a_bundle_symlink_that_leads_outside_the_bundle_is_refused(tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    secret = outside / "model.tflite"
    secret.write_bytes((DEFAULT_BUNDLE / "model.tflite").read_bytes())
    bundle = tmp_path / "b"
    bundle.mkdir()
    raw = _manifest_dict()
    raw["files"] = {"tflite": raw["files"]["tflite"]}
    (bundle / "manifest.json").write_text(json.dumps(raw))
    (bundle / "model.tflite").symlink_to(secret)  # the path text is fine; where it leads is not
    with pytest.raises(ManifestError, match=r"files\.tflite\.path 'model\.tflite' resolves to .*outside the bundle"):
        load_manifest(bundle)
    (bundle / "model.tflite").unlink()
    (bundle / "inner.tflite").write_bytes(secret.read_bytes())
    (bundle / "model.tflite").symlink_to("inner.tflite")  # a link that stays inside is fine
    assert load_manifest(bundle).path_of("tflite").resolve() == (bundle / "inner.tflite").resolve()


def test_a_manifest_with_a_million_labels_is_refused_in_one_short_line(tmp_path, capsys):
    import argparse

    from agent.contracts.errors import run_command

    raw = _manifest_dict()
    raw["labels"] = [f"label{i}" for i in range(1_000_000)]
    (tmp_path / "manifest.json").write_text(json.dumps(raw))

    def check(_args):
        load_manifest(tmp_path)

    assert run_command("fer-agent", argparse.Namespace(func=check, command="run")) == 2
    err = capsys.readouterr().err
    assert "key labels must be" in err and err.count("\n") == 1 and len(err) <= 501
