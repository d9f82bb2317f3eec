"""Seconds per training epoch for candidate network shapes, on this machine.

The issue's rule is "measure s/epoch before choosing the architecture": this
runs the real training step (the recipe's augmentation in tf.data, AdamW, op
determinism) on random 48x48 faces for each shape and scales to one FER2013
epoch (28,709 faces; validation not included). Shapes run interleaved and
repeated because the dev VM is throttled now and then (epochs jump from ~57 s
to ~80 s with nothing else running, whatever the network); the fastest run
is the network's own cost, the median shows how often throttling hit.

    python benchmarks/train_speed.py 24,48,96,192/2,2,2,2 32,64,128,192/1,2,2,2
    python benchmarks/train_speed.py 32,64,128,192/1,2,2,2 --precision float32 mixed_bfloat16
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
TRAIN_ROWS = 28709


def _shape(text: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
    from host_tools.model import check_shape  # cheap: TensorFlow is only imported to build

    try:
        widths, convs = text.split("/")
        shape = tuple(map(int, widths.split(","))), tuple(map(int, convs.split(",")))
    except ValueError:
        raise argparse.ArgumentTypeError(f"shape must look like 24,48,96,192/2,2,2,2, got {text!r}") from None
    try:
        check_shape(*shape)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text}: {exc}") from None
    return shape


def main(argv: list[str] | None = None) -> int:
    from host_tools.train import PRECISIONS  # no TensorFlow at import

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("shapes", nargs="+", type=_shape, help="WIDTHS/CONVS, e.g. 32,64,128,192/1,2,2,2")
    ap.add_argument("--steps", type=int, default=60, help="timed training steps per measurement")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--repeat", type=int, default=2, help="interleaved measurements per shape")
    ap.add_argument(
        "--precision",
        nargs="+",
        default=["float32"],
        choices=[p for p in PRECISIONS if p != "auto"],
        help="Keras dtype policies to time, each with every shape",
    )
    args = ap.parse_args(argv)

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import numpy as np
    import tensorflow as tf

    from agent.contracts.labels import NUM_CLASSES
    from agent.contracts.sysinfo import machine_line
    from host_tools.augment import AugmentConfig, augment_batch
    from host_tools.model import build_model

    keras.utils.set_random_seed(1)
    tf.config.experimental.enable_op_determinism()  # as in `fer-host train`; it costs ~10 % here
    n = args.steps * args.batch_size
    rng = np.random.default_rng(1)
    x = rng.standard_normal((n, 48, 48, 1), dtype=np.float32)
    y = rng.integers(0, NUM_CLASSES, n)
    aug = AugmentConfig()
    ds = (
        tf.data.Dataset.from_tensor_slices((x, y))
        .batch(args.batch_size)
        .map(lambda a, b: (augment_batch(a, aug), tf.one_hot(b, NUM_CLASSES)), num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(tf.data.AUTOTUNE)
    )
    models, names = [], []
    for widths, convs in args.shapes:
        for precision in args.precision:
            keras.config.set_dtype_policy(precision)  # layers keep the policy they were built with
            m = build_model(widths, convs=convs)
            m.compile(optimizer=keras.optimizers.AdamW(1e-3), loss="categorical_crossentropy")
            m.fit(ds.take(5), epochs=1, verbose=0, shuffle=False)  # build, trace and warm kernels outside the timing
            models.append(m)
            names.append(
                f"{','.join(map(str, widths))}/{','.join(map(str, convs))}"
                + (f" {precision}" if len(args.precision) > 1 else "")
            )
    keras.config.set_dtype_policy("float32")
    times: list[list[float]] = [[] for _ in models]
    for _ in range(args.repeat):
        for i, m in enumerate(models):
            t0 = time.perf_counter()
            m.fit(ds, epochs=1, verbose=0, shuffle=False)
            times[i].append((time.perf_counter() - t0) / n * TRAIN_ROWS)
    print(f"# s per FER2013 training epoch (validation excluded), {args.repeat} interleaved runs; {machine_line()}")
    for shape, m, ts in zip(names, models, times, strict=False):
        runs = " ".join(f"{t:.1f}" for t in ts)
        print(
            f"{shape:<38} {m.count_params() / 1e6:5.2f} M params  fastest {min(ts):5.1f} s/epoch"
            f"  median {statistics.median(ts):5.1f}  (runs: {runs})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
