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

from agent.labels import NUM_CLASSES

if TYPE_CHECKING:
    import keras

INPUT_NAME = "input"
OUTPUT_NAME = "probabilities"
DEFAULT_WIDTHS = (32, 64, 128, 192)
DEFAULT_CONVS = (1, 2, 2, 2)  # 3x3 convs per stage


def check_shape(widths: tuple[int, ...], convs: tuple[int, ...]) -> None:
    """Raise ValueError unless there is one conv count >= 1 and one width >= 1 per stage."""
    if not widths or len(convs) != len(widths) or min(convs) < 1 or min(widths) < 1:
        raise ValueError(f"needs widths >= 1 and one conv count >= 1 per stage of widths {list(widths)} "
                         f"({len(widths)} stages), got convs {list(convs)}")


def build_model(widths: tuple[int, ...] = DEFAULT_WIDTHS, dropout: float = 0.4, side: int = 48,
                convs: tuple[int, ...] = DEFAULT_CONVS) -> keras.Model:
    check_shape(widths, convs)
    import keras  # imported here so `fer-host --help` does not pay TensorFlow's start-up
    from keras import layers

    inp = keras.Input((side, side, 1), name=INPUT_NAME)
    x = inp
    for stage, (width, n_conv) in enumerate(zip(widths, convs)):
        for j in range(n_conv):
            x = layers.Conv2D(width, 3, padding="same", use_bias=False, name=f"s{stage}_conv{j}")(x)
            x = layers.BatchNormalization(name=f"s{stage}_bn{j}")(x)
            x = layers.ReLU(name=f"s{stage}_relu{j}")(x)
        x = layers.MaxPooling2D(name=f"s{stage}_pool")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Dropout(dropout, name="dropout")(x)
    out = layers.Dense(NUM_CLASSES, activation="softmax", name=OUTPUT_NAME)(x)
    return keras.Model(inp, out, name="fer_vgg")
