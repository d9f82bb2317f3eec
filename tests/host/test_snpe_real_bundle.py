"""End to end on the real bundle and FER2013 (skipped without ../shared): convert, calibrate, run on the 'DSP'."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from snpe_testing import litert_predict, make_fake_sdk, use_fake_sdk

from agent.classify import FaceClassifier
from agent.contracts.labels import LABELS
from agent.contracts.manifest import load_manifest
from agent.contracts.preprocess import image_tensor
from agent.runtimes.snpe import SnpeConfig

ROOT = Path(__file__).resolve().parents[2]
SHARED_CSV = ROOT.parent / "shared/datasets/fer2013/fer2013_train_publictest.csv.gz"
BUNDLE = ROOT / "agent" / "models" / "default"

pytestmark = [pytest.mark.data, pytest.mark.slow]


@pytest.mark.skipif(not SHARED_CSV.exists(), reason=f"needs the real FER2013 file at {SHARED_CSV}")
@pytest.mark.skipif(not (BUNDLE / "manifest.json").exists(), reason="needs the packaged bundle agent/models/default")
def test_real_bundle_convert_calibrate_and_run(tmp_path, monkeypatch):
    from host_tools import convert
    from host_tools import data as fer_data

    sdk = make_fake_sdk(tmp_path / "sdk")
    use_fake_sdk(monkeypatch, sdk)
    bundle = tmp_path / "bundle"
    shutil.copytree(BUNDLE, bundle, ignore=shutil.ignore_patterns("saved_model", "*.dlc"))
    work = tmp_path / "calib"
    m = convert.convert(
        bundle, data=SHARED_CSV, calibration_count=70, seed=0, htp_socs="sm8550", work_dir=work, echo=lambda s: None
    )
    assert m.extra["snpe"]["calibration"]["per_class"] == {lab: 10 for lab in LABELS}
    files = [Path(p) for p in (work / "calibration_list.txt").read_text().split()]
    assert len(files) == 70 and {f.stat().st_size for f in files} == {9216}

    test = fer_data.load(SHARED_CSV).split("PublicTest")
    faces = np.stack([image_tensor(test.x[i], m.input) for i in range(6)])
    b = FaceClassifier.on(m, "snpe", SnpeConfig(target="dsp", work_dir=str(tmp_path / "w")))
    try:
        assert b.runtime.role == "dlc_htp"
        y = b.infer(faces)
    finally:
        b.close()
    np.testing.assert_allclose(y, litert_predict(m.path_of("tflite_int8"), faces), atol=1e-6)
    np.testing.assert_allclose(y.sum(1), 1.0, atol=0.02)  # softmax outputs (int8 steps of 1/256)
    load_manifest(bundle).verify(["dlc", "dlc_quantized", "dlc_htp"])
