"""tflite backend: real LiteRT inference on the bundle's float and int8 models."""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np
import pytest

from agent.classify import FaceClassifier
from agent.contracts.preprocess import image_tensor
from agent.runtimes import BackendConfig, InferenceError, create_runtime
from agent.runtimes.tflite import TFLiteConfig
from agent.synthetic import astronaut_bgr, face_patch


def TFLiteBackend(manifest, cfg):  # noqa: N802 - reads like the class it stands for
    return FaceClassifier.on(manifest, "tflite", cfg)


@pytest.fixture(scope="module")
def faces(manifest):
    """Real face crops: the astronaut at several scales, shifts and mirrored."""
    photo = astronaut_bgr()
    out = []
    for size in (60, 96, 140, 200):
        for flip in (False, True):
            patch = face_patch(size, flip=flip, photo=photo)
            s = size // 5
            for dx, dy in ((0, 0), (s // 4, 0), (0, s // 4)):
                out.append(image_tensor(patch[s + dy : size - s + dy, s + dx : size - s + dx], manifest.input))
    return np.stack(out)


def test_float_and_int8_agree(manifest, faces):
    pf = TFLiteBackend(manifest, TFLiteConfig(model="float")).infer(faces)
    pq = TFLiteBackend(manifest, TFLiteConfig(model="int8")).infer(faces)
    assert pf.shape == pq.shape == (len(faces), 7)
    np.testing.assert_allclose(pf.sum(axis=1), 1.0, atol=1e-3)
    np.testing.assert_allclose(pq.sum(axis=1), 1.0, atol=2e-2)
    assert np.abs(pf - pq).max() < 0.1
    assert (pf.argmax(1) == pq.argmax(1)).mean() >= 0.8


def test_batch_equals_one_by_one(manifest, faces):
    b = TFLiteBackend(manifest, TFLiteConfig(model="int8"))
    batch = b.infer(faces[:5])
    single = np.concatenate([b.infer(faces[i : i + 1]) for i in range(5)])
    assert np.array_equal(batch, single)
    assert b.infer(faces[:0]).shape == (0, 7)


def test_describe_names_runtime_file_and_threads(manifest):
    b = TFLiteBackend(manifest, TFLiteConfig(model="float", threads=2))
    assert b.describe() == "tflite (ai-edge-litert, model.tflite, 2 threads, CPU)"


def test_input_shape_mismatch_is_an_error(manifest):
    bad = replace(manifest, input=replace(manifest.input, shape=(1, 64, 64, 1)))
    with pytest.raises(InferenceError, match=r"model_int8.tflite: input shape \[1, 48, 48, 1\] does not match"):
        TFLiteBackend(bad, TFLiteConfig())


def test_missing_int8_file_falls_back_to_float(manifest, caplog):
    no_int8 = replace(manifest, files={k: v for k, v in manifest.files.items() if k != "tflite_int8"})
    with caplog.at_level(logging.WARNING):
        b = TFLiteBackend(no_int8, TFLiteConfig(model="int8"))
    assert b.runtime.path.name == "model.tflite"
    assert "no tflite_int8 file" in caplog.text


@pytest.mark.filterwarnings(
    "ignore::pytest.PytestUnraisableExceptionWarning"
)  # LiteRT Delegate.__del__ after a failed load
def test_bad_delegate_is_a_clear_error(manifest, tmp_path):
    with pytest.raises(InferenceError, match="tflite.delegate: cannot load .*libNope.so"):
        TFLiteBackend(
            manifest, TFLiteConfig(delegate=str(tmp_path / "libNope.so"), delegate_options={"backend_type": "htp"})
        )


def test_auto_picks_tflite_without_the_snpe_sdk_and_says_why(manifest, monkeypatch, caplog):
    for var in ("SNPE_ROOT", "QAIRT_SDK_ROOT", "SNPE_NET_RUN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    with caplog.at_level(logging.INFO, logger="agent.runtimes"):
        started = create_runtime(BackendConfig(type="auto"), FaceClassifier.model(manifest))
    assert started.runtime.name == "tflite" and started.start_failure is None
    assert started.reason.startswith("auto: tflite is the first usable runtime")
    assert "snpe not usable: snpe-net-run not found" in started.explanation
    assert "classifier runtime: tflite (" in caplog.text and "snpe not usable" in caplog.text
