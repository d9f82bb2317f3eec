"""Train -> export -> evaluate on a tiny generated data set (TensorFlow; marked slow).

Proves the bundle's three model forms agree on the same faces through the
manifest's normalisation: Keras vs float TFLite vs frozen graph (max abs
difference), float vs int8 TFLite (argmax agreement >= 97 %).
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from fer_synth import synth_images, write_csv

from agent.contracts.manifest import load_manifest
from agent.contracts.preprocess import normalize
from host_tools.augment import AugmentConfig

tf = pytest.importorskip("tensorflow", reason="host tests need the `host` extra (TensorFlow)")
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from host_tools.train import TrainConfig, train

    root = tmp_path_factory.mktemp("host")
    data = write_csv(root / "synth.csv.gz", {"Training": 700, "PublicTest": 140, "PrivateTest": 70})
    # Gentle augmentation: the bars are 6 px apart, so the recipe's 4 px shifts would blur the classes.
    # A tiny net with two convs at full resolution: at these widths it learns the bars in 3 epochs.
    cfg = TrainConfig(
        data=str(data),
        out=str(root / "run"),
        epochs=3,
        batch_size=64,
        widths=(8, 16, 16, 32),
        convs=(2, 2, 2, 2),
        precision="float32",
        warmup_epochs=0.5,
        lr=1e-2,
        seed=3,
        augment=AugmentConfig(rotation_deg=2, scale=0.02, shift_px=1, erase_prob=0.2),
    )
    summary = train(cfg)
    return root, data, cfg, summary


def test_training_outputs(trained):
    root, _, cfg, summary = trained
    run = Path(cfg.out)
    for name in ("best.keras", "last.keras", "log.csv", "metrics.json", "training_curves.png", "confusion_matrix.png"):
        assert (run / name).stat().st_size > 0, name
    rows = list(csv.DictReader(open(run / "log.csv")))
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2] and "val_accuracy" in rows[0]
    m = json.loads((run / "metrics.json").read_text())
    assert set(m["publictest"]["per_class"]) == {"angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"}
    assert m["publictest"]["n"] == 140 and "privatetest" in m  # PrivateTest is reported when present
    assert np.array(m["publictest"]["confusion_matrix"]).sum() == 140
    assert summary["publictest"]["accuracy"] > 0.5  # the synthetic classes are easy


def test_resume_continues_from_last_epoch(trained, tmp_path):
    from host_tools.train import TrainConfig, train

    root, data, cfg, _ = trained
    out = tmp_path / "resumed"
    base = dict(
        data=str(data),
        out=str(out),
        batch_size=64,
        widths=TINY_WIDTHS,
        convs=TINY_CONVS,
        warmup_epochs=0.5,
        seed=3,
        limit=140,
    )
    train(TrainConfig(epochs=1, **base))
    # The checkpoint fixes the precision: a different --precision on resume is not what runs, so not what is recorded.
    summary = train(TrainConfig(epochs=2, resume=True, precision="mixed_bfloat16", **base))
    state = json.loads((out / "state.json").read_text())
    rows = list(csv.DictReader(open(out / "log.csv")))
    assert state["epochs_done"] == 2 and [int(r["epoch"]) for r in rows] == [0, 1]
    assert summary["precision"] == "float32"


# Two stages of one conv each: a short run's cost is mostly TensorFlow tracing the train step, which grows with
# the number of layers, not the rows; the tests below only tell training options apart.
TINY_WIDTHS, TINY_CONVS = (8, 8), (1, 1)


def _one_epoch(trained, out: Path, **overrides):
    """One epoch of a tiny net on 140 of the fixture's rows: enough to tell training options apart."""
    from host_tools.train import TrainConfig

    return TrainConfig(
        data=str(trained[1]),
        out=str(out),
        epochs=1,
        batch_size=64,
        widths=TINY_WIDTHS,
        convs=TINY_CONVS,
        seed=5,
        limit=140,
        **overrides,
    )


@pytest.fixture(scope="module")
def bundle(trained):
    from host_tools.export import export_bundle

    root, data, cfg, _ = trained
    out = root / "bundle"
    export_bundle(Path(cfg.out), out, str(data), version="9.9.9", calibration_rows=140)
    return out


def test_export_round_trip(bundle, trained):
    import keras

    from host_tools import tflite_eval

    m = load_manifest(bundle)  # verifies every sha256
    assert m.model_version == "9.9.9" and m.input.name == "input" and m.output.name == "probabilities"
    assert {"tflite", "tflite_int8", "frozen_graph", "saved_model"} <= set(m.files)
    assert 0 <= m.metrics["accuracy_float"] <= 1 and 0 <= m.metrics["accuracy_int8"] <= 1

    x_u8, _ = synth_images(300, seed=42)
    x = normalize(x_u8, m.input.normalization)[..., None]
    keras_out = keras.models.load_model(Path(trained[2].out) / "best.keras").predict(x, verbose=0)
    float_out = tflite_eval.predict(m.path_of("tflite"), x)
    int8_out = tflite_eval.predict(m.path_of("tflite_int8"), x)
    assert np.abs(keras_out - float_out).max() < 1e-4
    assert (keras_out.argmax(1) == int8_out.argmax(1)).mean() >= 0.97
    np.testing.assert_allclose(float_out.sum(1), 1.0, atol=1e-4)  # probabilities, as the manifest says

    # Frozen graph: the node names in the manifest feed and fetch the same numbers.
    graph_def = tf.compat.v1.GraphDef()
    graph_def.ParseFromString(m.path_of("frozen_graph").read_bytes())
    fn = tf.compat.v1.wrap_function(lambda: tf.compat.v1.import_graph_def(graph_def, name=""), [])
    run = fn.prune(
        fn.graph.get_tensor_by_name(f"{m.files['frozen_graph'].extra['input_node']}:0"),
        fn.graph.get_tensor_by_name(f"{m.output.name}:0"),
    )
    pb_out = np.concatenate([run(tf.constant(x[i : i + 1])).numpy() for i in range(20)])
    assert np.abs(pb_out - keras_out[:20]).max() < 1e-4


def test_evaluate_on_tiny_split(bundle, trained):
    from host_tools import tflite_eval
    from host_tools.evaluate import evaluate

    data = trained[1]
    res = evaluate(bundle, str(data), split="PrivateTest", tta_flip=False)
    assert res["n"] == 70 and set(res["variants"]) == {"float", "int8"}
    m = load_manifest(bundle)
    x_u8, y = synth_images(70, seed=2)  # write_csv seeds the third split with seed+2
    probs = tflite_eval.predict(m.path_of("tflite"), normalize(x_u8, m.input.normalization)[..., None])
    assert res["variants"]["float"]["accuracy"] == round(float((probs.argmax(1) == y).mean()), 4)
    tta = evaluate(bundle, str(data), split="test", variants=("float",), tta_flip=True)
    assert tta["tta_flip"] and tta["split"] == "PublicTest" and tta["n"] == 140


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "host_tools.cli", *args], capture_output=True, text=True, timeout=300)


def test_cli_evaluate_json_and_errors(bundle, trained, tmp_path):
    ok = _cli(
        "evaluate", str(bundle), "--data", str(trained[1]), "--split", "PublicTest", "--variant", "int8", "--json"
    )
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["variants"]["int8"]["n"] == 140

    bad = tmp_path / "bad.csv"
    bad.write_text("emotion,pixels,Usage\n3," + " ".join(["1"] * 2304) + ",PublicTest\n12,1 2,PublicTest\n")
    res = _cli("evaluate", str(bundle), "--data", str(bad))
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert f"{bad}: row 3: emotion 12 outside 0-6" in res.stderr
    skipped = _cli("evaluate", str(bundle), "--data", str(bad), "--skip-bad-rows", "--json")
    assert skipped.returncode == 0 and json.loads(skipped.stdout)["skipped_rows"] == 1
    assert json.loads(skipped.stdout)["skipped_first"] == ["3"]
    assert json.loads(skipped.stdout)["skipped_reasons"] == {"with emotion outside 0-6": 1}
    text = _cli("evaluate", str(bundle), "--data", str(bad), "--skip-bad-rows", "--variant", "float")
    assert f"skipped 1 bad row of {bad} (row 3): 1 with emotion outside 0-6" in text.stdout

    missing = _cli("export", str(tmp_path / "norun"), "--out", str(tmp_path / "b"))
    assert (
        missing.returncode == 2 and "no best.keras checkpoint" in missing.stderr and "Traceback" not in missing.stderr
    )


def test_cli_help_for_every_command():
    for cmd in ([], ["train"], ["evaluate"], ["export"]):
        res = _cli(*cmd, "--help")
        assert res.returncode == 0 and "usage: fer-host" in res.stdout
    res = _cli("train", "--data", "x.csv", "--widths", "a,b")
    assert res.returncode == 2 and "--widths must be comma-separated integers" in res.stderr


def test_init_from_starts_with_the_trained_weights(trained, tmp_path):
    import keras

    from host_tools.train import TrainConfig, train

    _, data, cfg, summary = trained
    source = Path(cfg.out) / "best.keras"
    out = tmp_path / "restart"
    train(
        TrainConfig(
            data=str(data),
            out=str(out),
            epochs=1,
            batch_size=64,
            widths=cfg.widths,
            convs=cfg.convs,
            lr=1e-9,
            warmup_epochs=0,
            seed=4,
            init_from=str(source),
            augment=cfg.augment,
        )
    )
    # With a negligible learning rate the restarted model keeps the source's trainable weights
    # (batch-norm moving statistics still move, so they are not compared).
    a = [w.numpy() for w in keras.models.load_model(source).trainable_weights]
    b = [w.numpy() for w in keras.models.load_model(out / "last.keras").trainable_weights]
    assert len(a) == len(b) and max(float(np.abs(x - y).max()) for x, y in zip(a, b, strict=False)) < 1e-4


def test_same_seed_same_weights(trained, tmp_path):
    """--seed makes a run repeatable bit for bit (op determinism on multi-threaded CPU kernels)."""
    import keras

    from host_tools.train import TrainConfig, train

    data = trained[1]
    weights = []
    for run in ("a", "b"):
        train(
            TrainConfig(
                data=str(data),
                out=str(tmp_path / run),
                epochs=1,
                batch_size=64,
                widths=TINY_WIDTHS,
                convs=TINY_CONVS,
                seed=7,
                limit=140,
            )
        )
        weights.append([w.numpy() for w in keras.models.load_model(tmp_path / run / "last.keras").trainable_weights])
    assert all(np.array_equal(a, b) for a, b in zip(*weights, strict=False))


def test_ema_weights_are_evaluated_and_kept_in_best_while_last_stays_raw(trained, tmp_path):
    """--ema: validation and best.keras use the averaged weights; last.keras keeps the raw ones for --resume.

    With a momentum of almost 1 the average stays where the first step left it (Keras starts the average
    after one step; warm-up keeps that step at lr/20), close to the initial weights that a run with a
    negligible learning rate reproduces (same seed), while the raw weights move away at the full rate.
    """
    import keras

    from host_tools.train import TrainConfig, train

    data = trained[1]
    base = dict(
        data=str(data),
        epochs=2,
        batch_size=64,
        widths=TINY_WIDTHS,
        convs=TINY_CONVS,
        warmup_epochs=1,
        seed=5,
        limit=280,
    )
    train(TrainConfig(out=str(tmp_path / "still"), lr=1e-9, **base))
    train(TrainConfig(out=str(tmp_path / "ema"), lr=1e-2, ema=0.999999, **base))

    def weights(path):
        return [w.numpy() for w in keras.models.load_model(path).trainable_weights]

    init, best, last = (
        weights(tmp_path / "still/last.keras"),
        weights(tmp_path / "ema/best.keras"),
        weights(tmp_path / "ema/last.keras"),
    )
    assert max(float(np.abs(a - b).max()) for a, b in zip(init, best, strict=False)) < 2e-3
    assert max(float(np.abs(a - b).max()) for a, b in zip(init, last, strict=False)) > 2e-2


def test_convs_per_stage_shape_the_model():
    from host_tools.model import build_model

    model = build_model((8, 16, 16, 32), convs=(1, 2, 3, 1))
    convs = [layer.name for layer in model.layers if "_conv" in layer.name]
    assert convs == ["s0_conv0", "s1_conv0", "s1_conv1", "s2_conv0", "s2_conv1", "s2_conv2", "s3_conv0"]
    with pytest.raises(ValueError, match="and one conv count >= 1 per stage"):
        build_model((8, 16), convs=(1, 2, 2))


def test_convs_flag_is_validated():
    res = _cli("train", "--data", "x.csv", "--convs", "1,2")
    assert res.returncode == 2 and "--widths/--convs: needs widths >= 1 and one conv count >= 1 per stage" in res.stderr
    assert "(4 stages), got convs [1, 2]" in res.stderr and "Traceback" not in res.stderr
    res = _cli("train", "--data", "x.csv", "--convs", "2,2,0,2")
    assert res.returncode == 2 and "got convs [2, 2, 0, 2]" in res.stderr


def test_train_speed_benchmark_runs_and_rejects_bad_shapes():
    script = Path(__file__).resolve().parents[2] / "benchmarks" / "train_speed.py"
    ok = subprocess.run(
        [
            sys.executable,
            str(script),
            "4,4/1,1",
            "--steps",
            "2",
            "--batch-size",
            "16",
            "--repeat",
            "2",
            "--precision",
            "float32",
            "mixed_bfloat16",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert ok.returncode == 0, ok.stderr[-2000:]
    rows = [line for line in ok.stdout.splitlines() if line.startswith("4,4/1,1")]
    assert [row.split()[1] for row in rows] == ["float32", "mixed_bfloat16"]
    assert all("fastest" in row and row.count("(runs: ") == 1 for row in rows)
    bad = subprocess.run([sys.executable, str(script), "8,8/1"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "8,8/1: needs widths >= 1 and one conv count" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_mixup_is_trained_with_and_recorded(trained, tmp_path):
    """--mixup reaches the training batches (same seed, different weights) and the run's config."""
    import keras

    from host_tools.train import train

    train(_one_epoch(trained, tmp_path / "plain"))
    train(_one_epoch(trained, tmp_path / "mix", augment=AugmentConfig(mixup_alpha=0.4)))
    plain, mix = (keras.models.load_model(tmp_path / run / "last.keras").get_weights() for run in ("plain", "mix"))
    assert max(float(np.abs(a - b).max()) for a, b in zip(plain, mix, strict=False)) > 1e-4
    cfg = json.loads((tmp_path / "mix/metrics.json").read_text())["config"]["augment"]
    assert cfg["mixup_alpha"] == 0.4 and cfg["mixup_prob"] == 1.0


def test_sgd_optimizer_is_used_and_recorded(trained, tmp_path):
    """--optimizer sgd trains with Nesterov SGD (kept in last.keras, so --resume continues with it)."""
    import keras

    from host_tools.train import train

    train(_one_epoch(trained, tmp_path / "sgd", optimizer="sgd", lr=0.05, weight_decay=5e-3))
    opt = keras.models.load_model(tmp_path / "sgd/last.keras").optimizer
    assert isinstance(opt, keras.optimizers.SGD) and opt.nesterov and opt.momentum == pytest.approx(0.9)
    assert opt.weight_decay == pytest.approx(5e-3)
    assert json.loads((tmp_path / "sgd/metrics.json").read_text())["config"]["optimizer"] == "sgd"


@pytest.mark.parametrize("field, bad", [("optimizer", "rmsprop"), ("precision", "float16")])
def test_unknown_optimizer_or_precision_is_rejected(field, bad):
    """By TrainConfig (before any data is read) and by the CLI, without a traceback."""
    from host_tools.train import TrainConfig

    with pytest.raises(ValueError, match=f"{field} must be one of"):
        TrainConfig(data="never-read.csv", **{field: bad})
    res = _cli("train", "--data", "x.csv", f"--{field}", bad)
    assert res.returncode == 2 and f"invalid choice: '{bad}'" in res.stderr and "Traceback" not in res.stderr


def test_bfloat16_training_is_exported_in_float32(trained, tmp_path):
    """--precision mixed_bfloat16 trains in bf16, but best.keras is scored and exported as a float32 model."""
    import keras

    from host_tools import tflite_eval
    from host_tools.export import export_bundle
    from host_tools.model import load_float32
    from host_tools.train import train

    train(_one_epoch(trained, tmp_path / "bf16", precision="mixed_bfloat16"))
    assert keras.config.dtype_policy().name == "float32"  # the process-global policy is put back
    raw = keras.models.load_model(tmp_path / "bf16/best.keras")
    assert raw.get_layer("s0_conv0").dtype_policy.name == "mixed_bfloat16"
    assert raw.get_layer("probabilities").dtype_policy.name == "float32"  # softmax and loss stay float32
    model = load_float32(tmp_path / "bf16/best.keras")
    assert {layer.dtype_policy.name for layer in model.layers} == {"float32"}
    for a, b in zip(raw.get_weights(), model.get_weights(), strict=False):
        np.testing.assert_array_equal(a, b)
    assert json.loads((tmp_path / "bf16/metrics.json").read_text())["config"]["precision"] == "mixed_bfloat16"

    m = export_bundle(tmp_path / "bf16", tmp_path / "bundle", str(trained[1]), calibration_rows=70, saved_model=False)
    x = normalize(synth_images(50, seed=8)[0], m.input.normalization)[..., None]
    float_out = tflite_eval.predict(m.path_of("tflite"), x)
    assert np.abs(model.predict(x, verbose=0) - float_out).max() < 1e-4  # float32 maths, not bf16


def test_flip_average_export_averages_the_face_and_its_mirror(trained, tmp_path):
    """--flip-average: every model form outputs mean(p(face), p(mirrored face)), so it is mirror-invariant."""
    from host_tools import tflite_eval
    from host_tools.export import export_bundle
    from host_tools.model import load_float32

    _, data, cfg, _ = trained
    m = export_bundle(
        Path(cfg.out), tmp_path / "flip", str(data), calibration_rows=140, saved_model=False, flip_average=True
    )
    assert load_manifest(tmp_path / "flip").to_dict()["model"]["views"] == ["face", "mirrored face"]
    x = normalize(synth_images(200, seed=11)[0], m.input.normalization)[..., None]
    keras_model = load_float32(Path(cfg.out) / "best.keras")
    expected = (keras_model.predict(x, verbose=0) + keras_model.predict(x[:, :, ::-1], verbose=0)) / 2
    float_out = tflite_eval.predict(m.path_of("tflite"), x)
    assert np.abs(float_out - expected).max() < 1e-4
    assert np.abs(tflite_eval.predict(m.path_of("tflite"), x[:, :, ::-1].copy()) - float_out).max() < 1e-4
    assert (tflite_eval.predict(m.path_of("tflite_int8"), x).argmax(1) == expected.argmax(1)).mean() >= 0.97
    graph_def = tf.compat.v1.GraphDef()
    graph_def.ParseFromString(m.path_of("frozen_graph").read_bytes())
    ops = {n.op for n in graph_def.node}
    assert "MatMul" in ops and not ops & {"ReverseV2", "Reverse"}  # mirrored by a matmul SNPE converts

    plain = export_bundle(Path(cfg.out), tmp_path / "plain", str(data), calibration_rows=140, saved_model=False)
    assert plain.to_dict()["model"]["views"] == ["face"]


def test_teacher_probabilities_average_the_face_and_its_mirror(bundle):
    from host_tools import tflite_eval
    from host_tools.distill import load_teachers, teacher_probabilities

    (m,) = load_teachers([str(bundle)])
    faces = synth_images(60, seed=8)[0]
    x = normalize(faces, m.input.normalization)[..., None]
    expected = (
        tflite_eval.predict(m.path_of("tflite"), x) + tflite_eval.predict(m.path_of("tflite"), x[:, :, ::-1].copy())
    ) / 2
    np.testing.assert_allclose(teacher_probabilities(m, faces), expected, atol=1e-6)


def test_training_with_a_teacher_changes_only_the_targets(trained, bundle, tmp_path):
    """alpha 0 reproduces the plain run bit for bit; alpha 1 trains on the teacher and records it."""
    import keras

    from host_tools.train import train

    def weights(run):
        return keras.models.load_model(tmp_path / run / "last.keras").get_weights()

    train(_one_epoch(trained, tmp_path / "plain"))
    train(_one_epoch(trained, tmp_path / "a0", teachers=(str(bundle),), distill_alpha=0.0))
    summary = train(_one_epoch(trained, tmp_path / "a1", teachers=(str(bundle),), distill_alpha=1.0))
    assert all(np.array_equal(a, b) for a, b in zip(weights("plain"), weights("a0"), strict=False))
    assert max(float(np.abs(a - b).max()) for a, b in zip(weights("plain"), weights("a1"), strict=False)) > 1e-4
    (teacher,) = json.loads((tmp_path / "a1/metrics.json").read_text())["teachers"]
    assert teacher["bundle"] == str(bundle) and teacher["model"] == "fer-vgg 9.9.9"
    assert 0.5 < teacher["train_accuracy"] <= 1.0  # the fixture net learned the synthetic classes
    assert summary["config"]["teachers"] == (str(bundle),) and summary["config"]["distill_alpha"] == 1.0


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--epochs", "0"], "--epochs and --batch-size must be >= 1"),
        (["--ema", "1.5"], "--ema must be in [0, 1), got 1.5"),
        (["--mixup", "-0.1"], "--mixup must be >= 0 and --mixup-prob in [0, 1], got -0.1 and 1.0"),
        (["--mixup", "0.2", "--mixup-prob", "1.5"], "--mixup must be >= 0 and --mixup-prob in [0, 1], got 0.2 and 1.5"),
        (
            ["--distill-alpha", "1.5"],
            "--distill-alpha must be in [0, 1] and --distill-temperature > 0, got 1.5 and 1.0",
        ),
        (
            ["--distill-temperature", "0"],
            "--distill-alpha must be in [0, 1] and --distill-temperature > 0, got 0.5 and 0.0",
        ),
        (["--teacher", "no/such/bundle"], "no/such/bundle: model bundle manifest not found"),
    ],
)
def test_bad_training_settings_fail_in_one_line_before_the_data_is_read(flags, message):
    res = _cli("train", "--data", "never-read.csv", *flags)
    assert res.returncode == 2 and message in res.stderr and "Traceback" not in res.stderr


def test_auto_precision_uses_bfloat16_only_where_the_cpu_has_it(tmp_path):
    from host_tools.train import resolve_precision

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor : 0\nflags : fpu sse2 avx2 avx512f avx512_bf16 avx512_vnni\n")
    assert resolve_precision("auto", cpuinfo) == "mixed_bfloat16"
    cpuinfo.write_text("flags : fpu sse2 avx2 amx_tile amx_bf16\n")
    assert resolve_precision("auto", cpuinfo) == "mixed_bfloat16"
    cpuinfo.write_text("flags : fpu sse2 avx2 avx512f avx512_vnni\n")
    assert resolve_precision("auto", cpuinfo) == "float32"
    assert resolve_precision("auto", tmp_path / "absent") == "float32"  # not Linux: no guessing
    assert resolve_precision("float32", cpuinfo.with_name("x")) == "float32"
    cpuinfo.write_text("flags : avx512_bf16\n")
    assert resolve_precision("float32", cpuinfo) == "float32"  # an explicit choice wins


def test_export_from_bundle_re_exports_the_bundle_network_without_retraining(bundle, trained, tmp_path):
    """--from-bundle: the frozen graph's network through the same export; without --flip-average the float TFLite
    computes what the source bundle's does on every PublicTest face (140), with it the mean over face and mirror."""
    from host_tools import tflite_eval
    from host_tools.data import load
    from host_tools.export import export_bundle

    data = trained[1]
    src = load_manifest(bundle)
    x = normalize(load(str(data)).split("PublicTest").x, src.input.normalization)[..., None]
    assert len(x) >= 100
    ref = tflite_eval.predict(src.path_of("tflite"), x)

    same = export_bundle(bundle, tmp_path / "same", str(data), version="9.9.10", calibration_rows=140, from_bundle=True)
    m = load_manifest(tmp_path / "same")  # verifies every sha256
    assert {"tflite", "tflite_int8", "frozen_graph", "saved_model", "onnx", "onnx_qdq"} <= set(m.files)
    assert np.abs(tflite_eval.predict(m.path_of("tflite"), x) - ref).max() < 1e-5
    assert (tflite_eval.predict(m.path_of("tflite_int8"), x).argmax(1) == ref.argmax(1)).mean() >= 0.97
    assert m.input.normalization == src.input.normalization and m.model_version == "9.9.10"
    model = m.to_dict()["model"]
    assert model["views"] == ["face"] and model["source"]["bundle"] == "fer-vgg 9.9.9"
    assert model["source"]["frozen_graph_sha256"] == src.files["frozen_graph"].sha256
    assert same.metrics["accuracy_float"] == src.metrics["accuracy_float"] and "macro_f1_int8" in same.metrics
    for name in ("training_metrics.json", "training_log.csv", "training_curves.png"):
        assert (tmp_path / "same" / name).read_bytes() == (bundle / name).read_bytes()

    flip = export_bundle(
        bundle,
        tmp_path / "flip",
        str(data),
        calibration_rows=140,
        saved_model=False,
        onnx=False,
        flip_average=True,
        from_bundle=True,
    )
    expected = (ref + tflite_eval.predict(src.path_of("tflite"), x[:, :, ::-1].copy())) / 2
    assert np.abs(tflite_eval.predict(flip.path_of("tflite"), x) - expected).max() < 1e-5
    assert flip.to_dict()["model"]["views"] == ["face", "mirrored face"]
    twice = _cli(
        "export",
        "--from-bundle",
        str(tmp_path / "flip"),
        "--out",
        str(tmp_path / "x"),
        "--data",
        str(data),
        "--flip-average",
    )
    assert twice.returncode == 2 and "Traceback" not in twice.stderr
    assert f"{tmp_path / 'flip' / 'manifest.json'}: model.views is already ['face', 'mirrored face']" in twice.stderr


def _graph_bundle(tmp_path: Path, in_shape: list[int], classes: int) -> Path:
    """The tiny stand-in bundle with its model.pb replaced by a graph of other input/output shapes."""
    import shutil

    from agent.contracts.manifest import file_entry

    root = tmp_path / f"b{in_shape[1]}x{classes}"
    shutil.copytree(Path(__file__).resolve().parents[1] / "stand_ins" / "tiny_bundle", root)
    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, in_shape, name="input")
        tf.identity(tf.nn.softmax(tf.reshape(tf.reduce_mean(x), [1, 1]) * tf.ones([1, classes])), name="probabilities")
    tf.io.write_graph(graph.as_graph_def(), str(root), "model.pb", as_text=False)
    raw = json.loads((root / "manifest.json").read_text())
    entry = file_entry(root, "model.pb")
    raw["files"]["frozen_graph"]["sha256"] = entry.sha256
    (root / "manifest.json").write_text(json.dumps(raw))
    return root


def test_export_from_bundle_errors_name_the_file_and_key(tmp_path):
    from agent.contracts.errors import FerError
    from host_tools.export import export_bundle

    tiny = Path(__file__).resolve().parents[1] / "stand_ins" / "tiny_bundle"
    wide = _graph_bundle(tmp_path, [1, 64, 64, 1], 7)
    with pytest.raises(
        FerError,
        match=r"model.pb: files.frozen_graph.input_node 'input' is a Placeholder of shape "
        r"\[1, 64, 64, 1\], expected a Placeholder of shape \[1, 48, 48, 1\]",
    ):
        export_bundle(wide, tmp_path / "out", "never-read.csv", from_bundle=True)
    five = _graph_bundle(tmp_path, [1, 48, 48, 1], 5)
    with pytest.raises(FerError, match=r"model.pb: files.frozen_graph.output_node 'probabilities' has shape \[1, 5\]"):
        export_bundle(five, tmp_path / "out", "never-read.csv", from_bundle=True)
    with pytest.raises(FerError, match="--out must be another directory than --from-bundle"):
        export_bundle(tiny, tiny, "never-read.csv", from_bundle=True)

    nograph = tmp_path / "nograph"
    nograph.mkdir()
    raw = json.loads((tiny / "manifest.json").read_text())
    del raw["files"]["frozen_graph"]
    (nograph / "manifest.json").write_text(json.dumps(raw))
    res = _cli("export", "--from-bundle", str(nograph), "--out", str(tmp_path / "out"), "--data", "never-read.csv")
    (line,) = [x for x in res.stderr.splitlines() if "error:" in x]  # TensorFlow's start-up chatter aside
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert line.startswith(f"fer-host export: error: {nograph / 'manifest.json'}: no files.frozen_graph (model.pb)")
    neither = _cli("export", "--out", str(tmp_path / "out"))
    assert neither.returncode == 2 and "a training run directory or --from-bundle BUNDLE" in neither.stderr


@pytest.mark.data
@pytest.mark.skipif(
    not (Path(__file__).resolve().parents[3] / "shared/datasets/fer2013").exists(),
    reason="real FER2013 not present under ../shared",
)
def test_default_bundle_network_from_its_frozen_graph_matches_its_float_tflite(tmp_path):
    """The shipped bundle's frozen graph, wrapped and converted like export does, is its model.tflite (200 faces)."""
    from agent.contracts.manifest import default_bundle_path
    from host_tools import export, export_source, tflite_eval
    from host_tools.data import load

    csv_path = Path(__file__).resolve().parents[3] / "shared/datasets/fer2013/fer2013_train_publictest.csv.gz"
    m = load_manifest(default_bundle_path())
    src = export_source.from_bundle(tf, default_bundle_path())
    x = normalize(load(str(csv_path)).split("PublicTest").x[:200], m.input.normalization)[..., None]
    _, frozen = export._serving_graph(tf, src.network, flip_average=False)
    export._write_tflite(tf, tmp_path, frozen, src.trackable, x[:10].astype(np.float32))
    diff = np.abs(tflite_eval.predict(tmp_path / "model.tflite", x) - tflite_eval.predict(m.path_of("tflite"), x))
    assert diff.max() < 1e-5
