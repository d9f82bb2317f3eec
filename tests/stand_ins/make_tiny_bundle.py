"""Regenerate ``tiny_bundle/``: a few-KB model bundle for the SNPE tests.

Same contract as the real bundle (manifest, model.tflite, model_int8.tflite
with float I/O, frozen GraphDef with input node "input" [1,48,48,1] and
output node "probabilities" [1,7] softmax) but a tiny random-weight network,
so tests need neither TensorFlow nor the trained model. Run with the venv:
``.venv/bin/python tests/stand_ins/make_tiny_bundle.py``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from agent.contracts.labels import LABELS
from agent.contracts.manifest import InputSpec, Manifest, Normalization, OutputSpec, file_entry

OUT = Path(__file__).resolve().parent / "tiny_bundle"


def main() -> None:
    import keras
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    keras.utils.set_random_seed(4)
    inp = keras.Input((48, 48, 1), name="input")
    x = keras.layers.Conv2D(4, 3, strides=2, activation="relu")(inp)
    x = keras.layers.GlobalAveragePooling2D()(x)
    out = keras.layers.Dense(len(LABELS), activation="softmax", name="probabilities")(x)
    model = keras.Model(inp, out)

    @tf.function(input_signature=[tf.TensorSpec([1, 48, 48, 1], tf.float32, name="input")])
    def serve(t):
        return {"probabilities": tf.identity(model(t, training=False), name="probabilities")}

    concrete = serve.get_concrete_function()
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir()
    frozen = convert_variables_to_constants_v2(concrete)  # constants: no variable ops left in the .tflite
    (OUT / "model.tflite").write_bytes(tf.lite.TFLiteConverter.from_concrete_functions([frozen], model).convert())

    rng = np.random.default_rng(0)
    conv = tf.lite.TFLiteConverter.from_concrete_functions([frozen], model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: ([rng.normal(0, 1, (1, 48, 48, 1)).astype(np.float32)] for _ in range(20))
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.float32
    conv.inference_output_type = tf.float32
    (OUT / "model_int8.tflite").write_bytes(conv.convert())  # float32 input/output, int8 inside

    tf.io.write_graph(frozen.graph.as_graph_def(), str(OUT), "model.pb", as_text=False)

    manifest = Manifest(
        model_name="tiny-test",
        model_version="0.0.1",
        labels=LABELS,
        input=InputSpec(name="input", shape=(1, 48, 48, 1), normalization=Normalization(0.5, 0.25)),
        output=OutputSpec(name="probabilities", kind="probabilities"),
        files={
            "tflite": file_entry(OUT, "model.tflite", **_names(OUT / "model.tflite")),
            "tflite_int8": file_entry(OUT, "model_int8.tflite", **_names(OUT / "model_int8.tflite")),
            "frozen_graph": file_entry(OUT, "model.pb", input_node="input", output_node="probabilities"),
        },
        extra={"model": {"note": "random weights, for tests only"}},
    )
    manifest.write(OUT)
    print(f"wrote {OUT}")


def _names(path: Path) -> dict[str, str]:
    """Tensor names inside a TFLite file, recorded like ``fer-host export`` does."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(path))
    return {
        "input_tensor": interp.get_input_details()[0]["name"],
        "output_tensor": interp.get_output_details()[0]["name"],
    }


if __name__ == "__main__":
    main()
