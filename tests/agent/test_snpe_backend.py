"""The snpe-net-run backend against the stand-in tools (tests/stand_ins)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from snpe_testing import (
    HOST_ARCH,
    add_dlcs,
    copy_bundle,
    litert_predict,
    make_fake_sdk,
    read_log,
    tool_path,
    use_fake_sdk,
)

from agent.classify import FaceClassifier
from agent.contracts.errors import ConfigError
from agent.contracts.manifest import load_manifest
from agent.contracts.snpe_sdk import find_tool
from agent.runtimes.base import InferenceError
from agent.runtimes.snpe import SnpeConfig, SnpeNetRun, SnpeRuntime, dlc_kind_for


class SnpeBackend(FaceClassifier):
    """The classifier on snpe-net-run, as the agent builds it."""

    def __init__(self, manifest, config):
        super().__init__(manifest, SnpeRuntime(FaceClassifier.model(manifest), config))

    @property
    def runner(self) -> SnpeNetRun:
        return self.runtime.runner

    @property
    def role(self) -> str:
        return self.runtime.role


def is_available(manifest, config) -> tuple[bool, str]:
    why = SnpeRuntime.unavailable(FaceClassifier.model(manifest), config)
    return why is None, why or ""


@pytest.fixture(scope="module")
def sdk(tmp_path_factory) -> Path:
    return make_fake_sdk(tmp_path_factory.mktemp("sdk") / "qairt")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory, sdk) -> Path:
    return add_dlcs(copy_bundle(tmp_path_factory.mktemp("b") / "bundle"), sdk)


@pytest.fixture
def env(monkeypatch, sdk, tmp_path):
    """SDK on $SNPE_ROOT, a call log, nothing else that could leak in."""
    use_fake_sdk(monkeypatch, sdk)
    log = tmp_path / "calls.jsonl"
    monkeypatch.setenv("SNPE_STAND_IN_LOG", str(log))
    return log


def faces(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 48, 48, 1)).astype(np.float32)


def cfg(tmp_path: Path, **kw) -> SnpeConfig:
    return SnpeConfig(work_dir=str(tmp_path / "work"), **kw)


# ---------------------------------------------------------------- command lines


@pytest.mark.parametrize(
    "target,flags", [("cpu", []), ("gpu", ["--use_gpu"]), ("dsp", ["--use_dsp"]), ("aip", ["--use_aip"])]
)
def test_target_maps_to_snpe_net_run_flag(env, bundle, tmp_path, target, flags):
    b = SnpeBackend(
        load_manifest(bundle), cfg(tmp_path, target=target, perf_profile="high_performance", userbuffer="float")
    )
    try:
        r = b.runner
        dlc = {"cpu": "model.dlc", "gpu": "model.dlc", "dsp": "model_htp.dlc", "aip": "model_quantized.dlc"}[target]
        assert r.command() == [
            str(r.tool),
            "--container",
            str((bundle / dlc).resolve()),
            "--input_list",
            str(r.input_list),
            "--output_dir",
            str(r.output_dir),
            *flags,
            "--perf_profile",
            "high_performance",
            "--userbuffer_float",
        ]
        assert r.tool.name == "snpe-net-run" and r.tool.parent.name == HOST_ARCH
    finally:
        b.close()


def test_describe_names_runtime_dlc_and_sdk_version(env, bundle, tmp_path):
    b = SnpeBackend(load_manifest(bundle), cfg(tmp_path, target="dsp", perf_profile="burst"))
    try:
        assert b.describe().startswith("snpe (dsp, perf burst, model_htp.dlc, SDK 2.26.0.240828, ")
    finally:
        b.close()


def test_empty_perf_profile_and_extra_args(env, bundle, tmp_path):
    b = SnpeBackend(
        load_manifest(bundle), cfg(tmp_path, target="cpu", perf_profile="", extra_args=["--enable_cpu_fallback"])
    )
    try:
        cmd = b.runner.command()
        assert "--perf_profile" not in cmd and not any(a.startswith("--userbuffer") for a in cmd)
        assert cmd[-1] == "--enable_cpu_fallback"
    finally:
        b.close()


def test_dsp_uses_quantized_dlc_without_htp(env, tmp_path, sdk):
    b2 = add_dlcs(copy_bundle(tmp_path / "b2"), sdk, htp=False)
    b = SnpeBackend(load_manifest(b2), cfg(tmp_path, target="dsp"))
    try:
        assert b.role == "dlc_quantized" and b.runner.dlc.name == "model_quantized.dlc"
    finally:
        b.close()


# ---------------------------------------------------------------- numbers


def test_several_faces_one_call_matches_litert(env, bundle, tmp_path):
    x = faces(3)
    b = SnpeBackend(load_manifest(bundle), cfg(tmp_path, target="cpu", keep_files=True))
    try:
        y = b.infer(x)
        listing = b.runner.input_list.read_text().splitlines()
    finally:
        b.close()
    calls = read_log(env)
    assert [c["tool"] for c in calls] == ["snpe-net-run"]  # one process for three faces
    assert len(listing) == 3 and listing[0] == str(b.runner.work / "in" / "0_input.raw")  # no header by default
    assert y.shape == (3, 7) and y.dtype == np.float32
    np.testing.assert_allclose(y, litert_predict(bundle / "model.tflite", x), rtol=1e-5, atol=1e-6)
    assert not np.allclose(y[0], y[1])  # distinct faces, distinct rows: order is real


@pytest.mark.parametrize("header,mark", [("layer", "#"), ("tensor", "%")])
def test_output_header_forms(env, bundle, tmp_path, header, mark):
    x = faces(2, seed=1)
    b = SnpeBackend(load_manifest(bundle), cfg(tmp_path, target="cpu", output_header=header, keep_files=True))
    try:
        y = b.infer(x)
        assert b.runner.input_list.read_text().splitlines()[0] == f"{mark}probabilities"
    finally:
        b.close()
    np.testing.assert_allclose(y, litert_predict(bundle / "model.tflite", x), rtol=1e-5, atol=1e-6)


def test_quantized_dlc_on_dsp_computes_with_int8_model(env, bundle, tmp_path):
    x = faces(2, seed=3)
    b = SnpeBackend(load_manifest(bundle), cfg(tmp_path, target="dsp"))
    try:
        y = b.infer(x)
    finally:
        b.close()
    np.testing.assert_allclose(y, litert_predict(bundle / "model_int8.tflite", x), atol=1e-6)


def test_zero_faces_makes_no_call(env, bundle, tmp_path):
    b = SnpeBackend(load_manifest(bundle), cfg(tmp_path, target="cpu"))
    try:
        assert b.infer(np.zeros((0, 48, 48, 1), np.float32)).shape == (0, 7)
    finally:
        b.close()
    assert read_log(env) == []


def test_wrong_face_shape_is_rejected(env, bundle, tmp_path):
    b = SnpeBackend(load_manifest(bundle), cfg(tmp_path, target="cpu"))
    try:
        with pytest.raises(InferenceError, match=r"\[N,48,48,1\]"):
            b.infer(np.zeros((1, 32, 32, 1), np.float32))
    finally:
        b.close()


# ---------------------------------------------------------------- failures


def test_missing_output_names_file(env, bundle, tmp_path, monkeypatch):
    monkeypatch.setenv("SNPE_STAND_IN_SKIP", "1")
    b = SnpeBackend(load_manifest(bundle), cfg(tmp_path, target="cpu"))
    try:
        with pytest.raises(InferenceError, match=r"Result_1/probabilities\.raw"):
            b.infer(faces(2))
    finally:
        b.close()


def test_short_output_names_sizes(env, bundle, tmp_path, monkeypatch):
    monkeypatch.setenv("SNPE_STAND_IN_SHORT", "0")
    b = SnpeBackend(load_manifest(bundle), cfg(tmp_path, target="cpu"))
    try:
        with pytest.raises(InferenceError, match=r"holds 12 bytes, expected 28"):
            b.infer(faces(1))
    finally:
        b.close()


def test_nonzero_exit_shows_command_code_and_stderr(env, bundle, tmp_path, monkeypatch):
    monkeypatch.setenv("SNPE_STAND_IN_EXIT", "3")
    b = SnpeBackend(load_manifest(bundle), cfg(tmp_path, target="dsp"))
    try:
        with pytest.raises(InferenceError) as err:
            b.infer(faces(1))
    finally:
        b.close()
    msg = str(err.value)
    assert "exited with code 3" in msg and "--use_dsp" in msg and "--container" in msg
    assert "stderr: ERROR: stand-in failure requested" in msg


def test_timeout_kills_the_call(env, bundle, tmp_path, monkeypatch):
    monkeypatch.setenv("SNPE_STAND_IN_SLEEP", "20")
    b = SnpeBackend(load_manifest(bundle), cfg(tmp_path, target="cpu", timeout_s=1.0))
    t0 = time.monotonic()
    try:
        with pytest.raises(InferenceError, match=r"timed out after 1 s"):
            b.infer(faces(1))
    finally:
        b.close()
    assert time.monotonic() - t0 < 10


def test_stale_results_are_never_reused(env, bundle, tmp_path, monkeypatch):
    b = SnpeBackend(load_manifest(bundle), cfg(tmp_path, target="cpu"))
    try:
        b.infer(faces(2))
        monkeypatch.setenv("SNPE_STAND_IN_SKIP", "0")
        b.runner.env["SNPE_STAND_IN_SKIP"] = "0"
        with pytest.raises(InferenceError, match="Result_0"):
            b.infer(faces(2))
    finally:
        b.close()


def test_files_cleaned_up(env, bundle, tmp_path):
    b = SnpeBackend(load_manifest(bundle), cfg(tmp_path, target="cpu"))
    work = b.runner.work
    b.infer(faces(2))
    assert not list(work.rglob("*.raw"))
    b.close()
    assert not work.exists()


# ---------------------------------------------------------------- environment and discovery


def test_library_paths_reach_the_tool(env, bundle, tmp_path, sdk, monkeypatch):
    monkeypatch.setenv("LD_LIBRARY_PATH", "/existing")
    c = cfg(
        tmp_path,
        target="dsp",
        ld_library_path=["/opt/vendor/lib"],
        adsp_library_path=["/opt/qairt/lib/hexagon-v73/unsigned", "/usr/lib/rfsa/adsp"],
        env={"EXTRA_VAR": "1"},
    )
    b = SnpeBackend(load_manifest(bundle), c)
    try:
        b.infer(faces(1))
        assert b.runner.env["EXTRA_VAR"] == "1"
    finally:
        b.close()
    (call,) = read_log(env)
    assert call["env"]["LD_LIBRARY_PATH"] == f"/opt/vendor/lib:{sdk / 'lib' / HOST_ARCH}:/existing"
    assert call["env"]["ADSP_LIBRARY_PATH"] == "/opt/qairt/lib/hexagon-v73/unsigned;/usr/lib/rfsa/adsp"


def test_discovery_order(monkeypatch, tmp_path, sdk):
    for var in ("SNPE_ROOT", "QAIRT_SDK_ROOT", "SNPE_NET_RUN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("PATH", "/nonexistent")
    path, searched = find_tool("snpe-net-run")
    assert path is None and searched == ["PATH"]
    monkeypatch.setenv("QAIRT_SDK_ROOT", str(sdk))
    assert find_tool("snpe-net-run")[0] == tool_path(sdk, "snpe-net-run")
    other = make_fake_sdk(tmp_path / "other")
    monkeypatch.setenv("SNPE_ROOT", str(other))  # $SNPE_ROOT is searched before $QAIRT_SDK_ROOT
    assert find_tool("snpe-net-run")[0] == tool_path(other, "snpe-net-run")
    assert find_tool("snpe-net-run", sdk_root=str(sdk))[0] == tool_path(sdk, "snpe-net-run")
    monkeypatch.delenv("SNPE_ROOT")
    monkeypatch.delenv("QAIRT_SDK_ROOT")
    monkeypatch.setenv("PATH", str(other / "bin" / HOST_ARCH))
    assert find_tool("snpe-dlc-quant")[0] == other / "bin" / HOST_ARCH / "snpe-dlc-quant"
    assert find_tool("snpe-net-run", override=str(tmp_path / "nope"))[0] is None


def test_is_available_reasons(monkeypatch, bundle, tmp_path, sdk):
    for var in ("SNPE_ROOT", "QAIRT_SDK_ROOT", "SNPE_NET_RUN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("PATH", "/nonexistent")
    m = load_manifest(bundle)
    ok, why = is_available(m, SnpeConfig())
    assert not ok and "snpe-net-run not found" in why
    monkeypatch.setenv("SNPE_ROOT", str(sdk))
    ok, why = is_available(m, SnpeConfig(target="dsp"))
    assert ok and dlc_kind_for(FaceClassifier.model(m), SnpeConfig(target="dsp")) == "dlc_htp"
    ok, why = is_available(load_manifest(copy_bundle(tmp_path / "plain")), SnpeConfig(target="cpu"))
    assert not ok and "no 'dlc' file" in why and "fer-host convert" in why
    bad = SnpeConfig()
    bad.target = "npu"
    ok, why = is_available(m, bad)
    assert not ok and "backend.snpe.target: 'npu' is not one of cpu, gpu, dsp, aip" in why


def test_missing_tool_is_a_clear_error(monkeypatch, bundle, tmp_path):
    monkeypatch.delenv("SNPE_NET_RUN", raising=False)
    with pytest.raises(InferenceError, match=r"snpe-net-run not found \(searched override"):
        SnpeBackend(load_manifest(bundle), cfg(tmp_path, target="cpu", snpe_net_run=str(tmp_path / "missing")))


@pytest.mark.parametrize(
    "field,value",
    [
        ("target", "npu"),
        ("perf_profile", "turbo"),
        ("userbuffer", "tf16x"),
        ("timeout_s", 0),
        ("fallback_after", 0),
        ("dlc_role", "onnx"),
        ("fallback", "gpu"),
    ],
)
def test_config_errors_name_the_key(field, value):
    """Set in code or read from a file, a bad value is one error naming the full dotted key."""
    c = SnpeConfig()
    setattr(c, field, value)
    with pytest.raises(ConfigError, match=f"^backend.snpe.{field}: "):
        c.validate()
    config = pytest.importorskip("agent.config")
    with pytest.raises(ConfigError, match=f": backend.snpe.{field}: "):
        config.parse_config({"backend": {"snpe": {field: value}}})


def test_config_loads_through_the_agent_yaml_parser():
    config = pytest.importorskip("agent.config")
    cfg = config.parse_config(
        {"backend": {"type": "snpe", "snpe": {"target": "gpu", "env": {"A": "1"}, "fallback_after": 2}}}
    )
    assert (
        cfg.backend.snpe.target == "gpu"
        and cfg.backend.snpe.env == {"A": "1"}
        and cfg.backend.snpe.fallback_after == 2
    )
    with pytest.raises(ConfigError, match="backend.snpe.target"):
        config.parse_config({"backend": {"snpe": {"target": "npu"}}})
    with pytest.raises(ConfigError, match="backend.snpe.target"):  # the old key, read for one more release
        config.parse_config({"backend": {"snpe": {"runtime": "npu"}}})


def test_every_config_field_is_documented():
    import dataclasses

    for f in dataclasses.fields(SnpeConfig):
        assert f.metadata.get("doc"), f.name


def test_tf8_userbuffer_needs_quantized_dlc(env, bundle, tmp_path):
    with pytest.raises(ConfigError, match="tf8 needs a quantized DLC"):
        SnpeBackend(load_manifest(bundle), cfg(tmp_path, target="cpu", userbuffer="tf8"))


def test_runner_multi_input_uses_named_form(env, bundle, tmp_path):
    """The detector or multi-input models: ``name:=path`` lines; the stand-in rejects unknown names."""
    r = SnpeNetRun(bundle / "model.dlc", ["input", "aux"], ["probabilities"], cfg(tmp_path, target="cpu"))
    try:
        with pytest.raises(InferenceError, match="'aux' is not an input of the network"):
            r.run([{"input": faces(1)[0], "aux": np.zeros(3, np.float32)}])
        line = r.input_list.read_text().splitlines()[0]
        assert line.startswith("input:=") and " aux:=" in line
    finally:
        r.close()


def test_registry_has_snpe():
    from agent.runtimes import RUNTIMES, backend_choices

    assert RUNTIMES.get("snpe") is SnpeRuntime and "snpe" in backend_choices()


def test_unwritable_work_dir_is_a_backend_error(env, bundle, tmp_path):
    import shutil

    b = SnpeBackend(load_manifest(bundle), cfg(tmp_path, target="cpu"))
    try:
        shutil.rmtree(b.runner.work)
        b.runner.work.write_text("not a directory")  # the work dir path is now a file
        with pytest.raises(InferenceError, match="cannot write the input tensors"):
            b.infer(faces(1))
    finally:
        b.runner.work.unlink()
        b.close()
