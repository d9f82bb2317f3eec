"""The qnn runtime on the board side: one ONNX Runtime session per model on the (here simulated) HTP.

On x86_64 onnxruntime-qnn's libQnnHtp.so simulates the HTP at about 0.1 s per face, so these tests use a
handful of faces; they skip with the reason when onnxruntime-qnn is not installed.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest

from agent.classify import FaceClassifier
from agent.config import parse_config
from agent.contracts import qnn
from agent.contracts.errors import FerError
from agent.contracts.preprocess import Box, face_tensor
from agent.runtimes import BackendConfig, InferenceError, create_runtime, select_runtime
from agent.runtimes.qnn import QnnConfig, QnnRuntime
from agent.synthetic import grid_frame

try:  # TensorFlow before libQnnHtp.so: the HTP library exports RE2 symbols a later TensorFlow would bind to (crash)
    import tensorflow  # noqa: F401
except ImportError:
    pass

needs_qnn = pytest.mark.skipif(not qnn.qnn_available(),
                               reason="onnxruntime-qnn not installed: pip install 'fer-agent[qnn]' (Python >= 3.11)")


@pytest.fixture(scope="module")
def faces(manifest):
    frame = grid_frame(1)
    face = face_tensor(frame, Box(260, 180, 120, 120), manifest.input)[None]
    return np.concatenate([face, face[:, :, ::-1]])  # the astronaut and her mirror image


@needs_qnn
def test_context_for_the_soc_and_qdq_compiled_at_start_agree_with_tflite(manifest, faces, tmp_path, caplog):
    want = FaceClassifier.on(manifest, "tflite", None).infer(faces)
    ctx = FaceClassifier.on(manifest, "qnn", QnnConfig(soc="qcs6490"))
    assert ctx.runtime.source == "qnn_ctx_qcs6490" and "HTP simulator on x86_64 qcs6490 v68" in ctx.describe()
    np.testing.assert_allclose(ctx.infer(faces), want, atol=0.03)  # uint8 QDQ against int8 TFLite
    ctx.close()
    cache = tmp_path / "state" / "qnn"
    with caplog.at_level(logging.INFO, logger="agent.runtimes.qnn"):
        first = FaceClassifier.on(manifest, "qnn", QnnConfig(soc="sm8650", cache_dir=str(cache)))
        # no cache_dir: the state directory the runner passes (service.state_dir resolved), under qnn/
        again = FaceClassifier.on(manifest, "qnn", QnnConfig(soc="sm8650"), state_dir=tmp_path / "state")
    assert first.runtime.source == "onnx_qdq" and "compiled model_qdq.onnx for sm8650 (htp v75)" in caplog.text
    assert "cached context" in caplog.text and again.runtime.path == first.runtime.path
    assert len(list(cache.glob("classifier_sm8650_*_ctx_qnn.bin"))) == 1
    assert (again.infer(faces).argmax(1) == want.argmax(1)).all()


@needs_qnn
def test_blazeface_runs_on_qnn_when_asked(manifest):
    from agent.detectors import create_detector

    cfg = parse_config({"detector": {"type": "blazeface", "runtime": "qnn"}, "backend": {"qnn": {"soc": "qcs6490"}}})
    det = create_detector(cfg.detector, manifest, cfg.backend)
    frame = grid_frame(1)
    (found,) = det.detect(frame, frame[:, :, 1].copy())
    assert det.runtime.name == "qnn" and found.box.w > 80
    det.close()


def test_auto_order_and_reasons(manifest, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    for var in ("SNPE_ROOT", "QAIRT_SDK_ROOT", "SNPE_NET_RUN"):
        monkeypatch.delenv(var, raising=False)
    model = FaceClassifier.model(manifest)
    name, why = select_runtime(BackendConfig(), model)
    assert name == "tflite" and why.index("qnn not usable") < why.index("snpe not usable")
    if qnn.qnn_available():
        assert "x86_64 only simulates the HTP" in why
        monkeypatch.setattr(qnn, "htp_is_simulated", lambda: False)  # as on an aarch64 board
        cfg = BackendConfig()
        cfg.qnn.soc = "qcs6490"
        assert select_runtime(cfg, model)[0] == "qnn"
    monkeypatch.setattr(qnn, "qnn_available", lambda: False)
    assert "onnxruntime-qnn is not installed" in select_runtime(BackendConfig(), model)[1]


def test_qnn_without_the_package_is_one_clear_line(manifest, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_ort(name, *a, **k):
        if name.startswith(("onnxruntime", "onnxruntime_qnn")):
            raise ImportError(f"No module named {name!r}", name=name)
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_ort)
    with pytest.raises(FerError, match=r"needs onnxruntime and onnxruntime-qnn .*pip install 'fer-agent\[qnn\]'"):
        QnnRuntime(FaceClassifier.model(manifest), QnnConfig(soc="qcs6490"))


@needs_qnn
def test_failures_switch_to_tflite_after_k_and_a_session_that_cannot_start_falls_back(manifest, faces, monkeypatch):
    cfg = parse_config({"backend": {"type": "qnn", "qnn": {"soc": "qcs6490", "fallback_after": 2}}})
    switched = []
    clf = FaceClassifier(manifest, create_runtime(cfg.backend, FaceClassifier.model(manifest),
                                                  on_switch=lambda name, why: switched.append((name, why))).runtime)
    assert clf.name == "qnn"

    def broken(*_a, **_k):
        raise RuntimeError("QNN graph execute failed: 1002")

    monkeypatch.setattr(clf.runtime.primary.session, "run", broken)
    with pytest.raises(InferenceError, match="qnn: model_ctx.onnx: inference failed: QNN graph execute failed"):
        clf.infer(faces)
    assert clf.infer(faces).shape == (2, 7) and clf.name == "tflite"  # 2nd failure: switched, frame answered
    assert switched[0][0] == "tflite" and "qnn failed 2 consecutive frames" in switched[0][1]
    # A session the HTP refuses at start: the fallback runs from the first frame, with the reason.
    monkeypatch.setattr(qnn, "qnn_session", lambda *a, **k: (_ for _ in ()).throw(qnn.QnnError("HTP refused it")))
    started = create_runtime(cfg.backend, FaceClassifier.model(manifest))
    assert started.runtime.name == "tflite" and started.start_failure == "qnn could not start: HTP refused it"
    assert "fallback: qnn could not start: HTP refused it" in started.explanation


@needs_qnn
def test_wrong_output_shape_counts_as_a_failed_frame(manifest, faces, monkeypatch):
    cfg = parse_config({"backend": {"type": "qnn", "qnn": {"soc": "qcs6490", "fallback_after": 1}}})
    clf = FaceClassifier(manifest, create_runtime(cfg.backend, FaceClassifier.model(manifest)).runtime)
    session = clf.runtime.primary.session
    monkeypatch.setattr(session, "run", lambda *a, **k: [np.zeros((1, 6), np.float32)])
    assert clf.infer(faces).shape == (2, 7) and clf.name == "tflite"
    assert "outputs of [6] values per item, expected [7]" in clf.runtime.switch_reason


@needs_qnn
def test_agent_end_to_end_on_qnn_to_mosquitto(tmp_path, mosquitto, mqtt_collector):
    from agent.config import apply_overrides
    from agent.runner import run_agent
    from agent.synthetic import write_clip

    clip = write_clip(tmp_path / "clip.mp4", seconds=2.0)
    cfg = parse_config({"backend": {"qnn": {"soc": "qcs6490"}}, "mqtt": {"device_id": "npu"},
                        "service": {"state_dir": str(tmp_path / "s"), "health_file": str(tmp_path / "h.json")}})
    apply_overrides(cfg, source=str(clip), backend="qnn", broker=f"{mosquitto.host}:{mosquitto.port}")
    collector = mqtt_collector(mosquitto.host, mosquitto.port, "fer/npu/#")
    summary = run_agent(cfg)
    assert summary.failed_inferences == 0
    events = [m.json() for m in collector.wait_count("fer/npu/events", summary.events, timeout=15)]
    assert events and {e["backend"] for e in events} == {"qnn"}
    assert {e["label"] for e in events if e["type"] == "appeared"} == {"happy"}
    stats = collector.wait_count("fer/npu/stats", 1, timeout=15)[-1].json()
    assert "HTP simulator on x86_64" in stats["extra"]["backend_detail"]


def test_board_dsp_loader_finds_the_wheel_skel_libraries(tmp_path, monkeypatch):
    """On a board the wheel's libQnnHtpV<arch>Skel.so must be on ADSP_LIBRARY_PATH (';'-separated), after the unit's."""
    monkeypatch.setenv("ADSP_LIBRARY_PATH", "/opt/vendor/dsp")
    qnn._point_dsp_loader_at(tmp_path)  # no skel libraries there: nothing changes
    assert qnn.os.environ["ADSP_LIBRARY_PATH"] == "/opt/vendor/dsp"
    (tmp_path / "libQnnHtpV68Skel.so").write_bytes(b"")
    qnn._point_dsp_loader_at(tmp_path)
    qnn._point_dsp_loader_at(tmp_path)  # idempotent
    assert qnn.os.environ["ADSP_LIBRARY_PATH"] == f"/opt/vendor/dsp;{tmp_path};/usr/lib/rfsa/adsp;/usr/lib/dsp;/dsp"
