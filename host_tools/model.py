"""The classifier, defined in one place.

A plain VGG-style stack (3x3 conv -> batch norm -> ReLU, max pool between
stages, global average pool, dense softmax). Every op is in the SNPE
TensorFlow/TFLite converters' supported lists and quantises cleanly to int8
(batch norm folds into the conv; no exotic activations). The default shape was
chosen by measurement on the 2-core host: one conv at full 48x48 resolution
(a second one there costs a quarter of the training time) pays for wider
middle stages, 32/64/128/192; that gained 0.5 points over 24/48/96/192 with two
convs per stage for 10 % more training time and 0.21 -> ~0.25 ms/face int8 on
one core (`benchmarks/train_speed.py`, `fer-agent bench`; README, "Model card").
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from agent.contracts.labels import NUM_CLASSES

if TYPE_CHECKING:
    import keras

INPUT_NAME = "input"
OUTPUT_NAME = "probabilities"
DEFAULT_WIDTHS = (32, 64, 128, 192)
DEFAULT_CONVS = (1, 2, 2, 2)  # 3x3 convs per stage


def check_shape(widths: tuple[int, ...], convs: tuple[int, ...]) -> None:
    """Raise ValueError unless there is one conv count >= 1 and one width >= 1 per stage."""
    if not widths or len(convs) != len(widths) or min(convs) < 1 or min(widths) < 1:
        raise ValueError(
            f"needs widths >= 1 and one conv count >= 1 per stage of widths {list(widths)} "
            f"({len(widths)} stages), got convs {list(convs)}"
        )


def build_model(
    widths: tuple[int, ...] = DEFAULT_WIDTHS,
    dropout: float = 0.4,
    side: int = 48,
    convs: tuple[int, ...] = DEFAULT_CONVS,
) -> keras.Model:
    check_shape(widths, convs)
    import keras  # imported here so `fer-host --help` does not pay TensorFlow's start-up
    from keras import layers

    inp = keras.Input((side, side, 1), name=INPUT_NAME)
    x = inp
    for stage, (width, n_conv) in enumerate(zip(widths, convs, strict=False)):
        for j in range(n_conv):
            x = layers.Conv2D(width, 3, padding="same", use_bias=False, name=f"s{stage}_conv{j}")(x)
            x = layers.BatchNormalization(name=f"s{stage}_bn{j}")(x)
            x = layers.ReLU(name=f"s{stage}_relu{j}")(x)
        x = layers.MaxPooling2D(name=f"s{stage}_pool")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Dropout(dropout, name="dropout")(x)
    # float32 whatever the global dtype policy: softmax and the loss stay exact under mixed precision.
    out = layers.Dense(NUM_CLASSES, activation="softmax", name=OUTPUT_NAME, dtype="float32")(x)
    return keras.Model(inp, out, name="fer_vgg")


def load_float32(path) -> keras.Model:
    """Load a checkpoint for inference with every layer computing in float32.

    A model trained under mixed_bfloat16 is saved with that policy on each layer; exported and
    evaluated as is, it would run (and be converted) in bfloat16. Its variables are float32
    either way, so a float32 clone with the same weights is the model that was trained.
    """
    import keras

    model = keras.models.load_model(path, compile=False)
    if all(layer.dtype_policy.name == "float32" for layer in model.layers):
        return model

    def _float32(layer):
        return layer.__class__.from_config({**layer.get_config(), "dtype": "float32"})

    clone = keras.models.clone_model(model, clone_function=_float32)
    clone.set_weights(model.get_weights())
    return clone
