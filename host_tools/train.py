"""``fer-host train``: the default recipe for FER2013 on a small CPU budget.

Recipe (all flags in :class:`TrainConfig`): AdamW (or Nesterov SGD) with
decoupled weight decay (not on batch-norm or bias), linear warm-up then cosine
decay, label smoothing, flip/rotate/scale/shift augmentation plus random
erasing, model selection on PublicTest; optionally soft targets from teacher
bundles (:mod:`host_tools.distill`). Checkpoints every epoch make
``--resume`` exact (optimizer state and schedule position included).
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from agent.contracts.labels import NUM_CLASSES
from agent.contracts.manifest import Normalization, load_manifest
from agent.contracts.preprocess import normalize
from agent.contracts.sysinfo import machine_line
from host_tools import data as fer_data
from host_tools import metrics, plots
from host_tools.augment import AugmentConfig
from host_tools.model import DEFAULT_CONVS, DEFAULT_WIDTHS, check_shape

OPTIMIZERS = ("adamw", "sgd")
LABEL_SOURCES = ("fer2013", "ferplus")  # --labels: FER2013's one-hot labels or the FER+ crowd votes
PRECISIONS = ("auto", "float32", "mixed_bfloat16")
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")  # /proc/cpuinfo flags of CPUs with native bfloat16 maths


def resolve_precision(requested: str, cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The Keras dtype policy for ``requested``: "auto" is mixed_bfloat16 where the CPU has bfloat16
    instructions (24 % faster epochs here, benchmarks/train_speed.py) and float32 elsewhere, where
    bf16 is emulated and slower."""
    if requested != "auto":
        return requested
    try:
        flags = set(cpuinfo.read_text().split())
    except OSError:
        return "float32"
    return "mixed_bfloat16" if flags.intersection(BF16_CPU_FLAGS) else "float32"


@dataclass
class TrainConfig:
    data: str
    out: str = "runs/default"
    epochs: int = 60
    batch_size: int = 128
    lr: float = 3e-3
    weight_decay: float = 0.01
    warmup_epochs: float = 2.0
    label_smoothing: float = 0.1
    optimizer: str = "adamw"  # or "sgd": Nesterov momentum 0.9, same decoupled weight decay and schedule
    precision: str = "float32"  # or "mixed_bfloat16" (bf16 compute, float32 weights) or "auto"; see resolve_precision
    ema: float = 0.0  # momentum of the weight moving average used for evaluation and best.keras (0 = off)
    dropout: float = 0.4
    widths: tuple[int, ...] = DEFAULT_WIDTHS
    convs: tuple[int, ...] = DEFAULT_CONVS
    seed: int = 1
    limit: int = 0  # use at most this many rows per split (0 = all); for smoke runs
    skip_bad_rows: bool = False
    resume: bool = False
    init_from: str | None = None  # start from these weights with a fresh optimizer/schedule (warm restart)
    teachers: tuple[str, ...] = ()  # bundles whose (flip-averaged) probabilities blend into the targets
    distill_alpha: float = 0.5  # weight of the teachers' probabilities in the targets (rest: the label)
    distill_temperature: float = 1.0
    labels: str = "fer2013"  # training targets: "fer2013" one-hot, or "ferplus" vote distributions (host_tools.ferplus)
    ferplus: str | None = None  # the FER+ votes file; default: beside ``data``
    ferplus_weight: float = 1.0  # ferplus targets = weight * votes + (1 - weight) * FER2013 one-hot
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def __post_init__(self) -> None:
        # Checked here, not in train(), so a typo fails before the data set is loaded; worded for the CLI,
        # which turns these ValueErrors into one-line errors.
        try:
            check_shape(self.widths, self.convs)
        except ValueError as exc:
            raise ValueError(f"--widths/--convs: {exc}") from None
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("--epochs and --batch-size must be >= 1")
        if not 0.0 <= self.ema < 1.0:
            raise ValueError(f"--ema must be in [0, 1), got {self.ema}")
        a = self.augment
        if not 0.0 <= a.camera_prob <= 1.0 or not 0.0 <= a.aspect < 1.0:
            raise ValueError(f"--camera-prob must be in [0, 1] and the aspect jitter in [0, 1), got {a.camera_prob} "
                             f"and {a.aspect}")
        if a.mixup_alpha < 0 or not 0.0 <= a.mixup_prob <= 1.0:
            raise ValueError(f"--mixup must be >= 0 and --mixup-prob in [0, 1], got {a.mixup_alpha} and {a.mixup_prob}")
        if self.labels not in LABEL_SOURCES:
            raise ValueError(f"--labels must be one of {LABEL_SOURCES}, got {self.labels!r}")
        if not 0.0 <= self.ferplus_weight <= 1.0:
            raise ValueError(f"--ferplus-weight must be in [0, 1], got {self.ferplus_weight}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if not 0.0 <= self.distill_alpha <= 1.0 or self.distill_temperature <= 0:
            raise ValueError(
                f"--distill-alpha must be in [0, 1] and --distill-temperature > 0, "
                f"got {self.distill_alpha} and {self.distill_temperature}"
            )


def _limit(split: fer_data.Split, n: int, seed: int, targets: np.ndarray | None = None):
    """At most ``n`` rows of ``split`` (and of its ``targets`` rows) drawn at random; all when ``n`` is 0."""
    if not n or len(split) <= n:
        return split, targets
    idx = np.random.default_rng(seed).permutation(len(split))[:n]
    return fer_data.Split(split.x[idx], split.y[idx]), None if targets is None else targets[idx]


def _ferplus_targets(cfg: TrainConfig, votes: dict, dataset: fer_data.Dataset) -> tuple[fer_data.Split, np.ndarray]:
    """The Training rows the FER+ votes keep and their targets (:mod:`host_tools.ferplus`)."""
    from host_tools import ferplus

    path = cfg.ferplus or ferplus.default_path(cfg.data)
    split = dataset.split("Training")
    if "Training" not in votes:
        raise fer_data.DataError(f"{path}: no Training rows")
    ferplus.check_aligned(votes["Training"], split.y, "Training", path)
    targets, keep = ferplus.targets(votes["Training"], split.y, cfg.ferplus_weight)
    print(f"FER+ votes ({path}): training on {int(keep.sum())} of {len(split)} Training rows "
          f"(dropped {int((~keep).sum())}: unknown / not a face), vote weight {cfg.ferplus_weight}")
    return fer_data.Split(split.x[keep], split.y[keep]), targets


def train(cfg: TrainConfig) -> dict:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(resolve_precision(cfg.precision))
    try:
        return _train(cfg)
    finally:  # the policy is process-global: do not leak it into later builds (tests, export)
        keras.config.set_dtype_policy(previous)


@dataclass
class _Data:
    """The normalised splits a run trains and validates on, with the distillation targets."""

    norm: Normalization
    x_train: np.ndarray
    t_train: np.ndarray  # one-hot labels or FER+ votes, blended with the teachers' probabilities
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    teachers: list  # host_tools.distill.Teacher, one per --teacher
    dataset: fer_data.Dataset


def _load_data(cfg: TrainConfig, state_path: Path) -> _Data:
    teacher_bundles = []
    if cfg.teachers:
        from host_tools.distill import load_teachers

        teacher_bundles = load_teachers(cfg.teachers)  # checked before the data set is read
    votes = None
    if cfg.labels == "ferplus":  # read first too: a wrong path fails before tens of seconds of decoding
        from host_tools import ferplus

        votes = ferplus.load(cfg.ferplus or ferplus.default_path(cfg.data))
    dataset = fer_data.load(cfg.data, skip_bad_rows=cfg.skip_bad_rows)
    if dataset.skipped:
        print(f"{dataset.skip_summary()}; e.g. {dataset.skipped_examples[0]}", file=sys.stderr)
    if cfg.labels == "ferplus":
        train_split, base = _ferplus_targets(cfg, votes, dataset)
    else:
        train_split = dataset.split("Training")
        base = np.eye(NUM_CLASSES, dtype=np.float32)[train_split.y]
    train_split, base = _limit(train_split, cfg.limit, cfg.seed, base)
    val_split, _ = _limit(dataset.split("PublicTest"), cfg.limit, cfg.seed)
    if cfg.resume and state_path.exists():
        norm = Normalization(**json.loads(state_path.read_text())["normalization"])
    elif cfg.init_from and (Path(cfg.init_from) / "manifest.json").is_file():
        norm = load_manifest(cfg.init_from).input.normalization  # the input the bundle's weights expect
    else:
        pix = train_split.x.astype(np.float32) / 255.0
        norm = Normalization(mean=round(float(pix.mean()), 4), std=round(float(pix.std()), 4))
    teachers: list = []
    if cfg.teachers:
        from host_tools.distill import distillation_targets

        t_train, teachers = distillation_targets(
            teacher_bundles, train_split.x, train_split.y, cfg.distill_alpha, cfg.distill_temperature, base
        )
        for t in teachers:
            print(f"teacher {t.model} ({t.bundle}): {t.train_accuracy:.2%} on Training, face and mirror averaged")
    else:
        t_train = base
    return _Data(
        norm,
        normalize(train_split.x, norm)[..., None],
        t_train,
        train_split.y,
        normalize(val_split.x, norm)[..., None],
        val_split.y,
        teachers,
        dataset,
    )


def _init_weights(cfg: TrainConfig) -> list[np.ndarray]:
    """``--init-from``: a ``.keras`` checkpoint's weights, or a bundle's (:mod:`host_tools.bundle_weights`)."""
    import keras

    from host_tools import bundle_weights
    from host_tools.model import build_model

    if bundle_weights.is_bundle(cfg.init_from):
        return bundle_weights.bundle_weights(cfg.init_from, lambda: build_model(cfg.widths, cfg.dropout,
                                                                                  convs=cfg.convs))[0]
    return keras.models.load_model(cfg.init_from).get_weights()


def _compiled_model(cfg: TrainConfig, steps_per_epoch: int):
    import keras

    from host_tools.model import build_model

    model = build_model(cfg.widths, cfg.dropout, convs=cfg.convs)
    if cfg.init_from:
        # SGDR-style warm restart / fine-tuning: same architecture, trained weights, a new LR cycle.
        model.set_weights(_init_weights(cfg))
        print(f"initialised weights from {cfg.init_from}")
    total_steps = steps_per_epoch * cfg.epochs
    warmup = int(steps_per_epoch * cfg.warmup_epochs)
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=cfg.lr / 20,
        decay_steps=max(total_steps - warmup, 1),
        alpha=0.01,
        warmup_target=cfg.lr if warmup else None,
        warmup_steps=warmup,
    )
    opt_args = dict(
        learning_rate=schedule if warmup else cfg.lr,
        weight_decay=cfg.weight_decay,
        use_ema=cfg.ema > 0,
        ema_momentum=cfg.ema or 0.99,
    )
    if cfg.optimizer == "sgd":
        opt = keras.optimizers.SGD(momentum=0.9, nesterov=True, **opt_args)
    else:
        opt = keras.optimizers.AdamW(**opt_args)
    opt.exclude_from_weight_decay(var_names=["gamma", "beta", "bias"])
    model.compile(
        optimizer=opt,
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=cfg.label_smoothing),
        metrics=["accuracy"],
    )
    return model


def _callbacks(cfg: TrainConfig, out: Path, state_path: Path, norm: Normalization, resumed: dict) -> list:
    import keras

    class _State(keras.callbacks.Callback):
        """Persist what --resume needs after each epoch's checkpoints are written."""

        def __init__(self) -> None:
            super().__init__()
            self.t0 = time.time()
            self.best_acc = resumed.get("best_val_accuracy")

        def on_epoch_end(self, epoch, logs=None):
            acc = float((logs or {}).get("val_accuracy", 0.0))
            self.best_acc = acc if self.best_acc is None else max(self.best_acc, acc)
            state_path.write_text(
                json.dumps(
                    {
                        "epochs_done": epoch + 1,
                        "best_val_accuracy": self.best_acc,
                        "train_seconds": float(resumed.get("train_seconds", 0.0)) + time.time() - self.t0,
                        "normalization": asdict(norm),
                        "config": asdict(cfg),
                    },
                    indent=2,
                )
            )

    # Order matters: last.keras keeps the raw weights (so --resume continues the same run); with --ema
    # the swap callback then puts the averaged weights in place for validation and for best.keras.
    return [
        keras.callbacks.ModelCheckpoint(out / "last.keras"),
        keras.callbacks.CSVLogger(out / "log.csv", append=bool(resumed)),
        *([keras.callbacks.SwapEMAWeights(swap_on_epoch=True)] if cfg.ema > 0 else []),
        keras.callbacks.ModelCheckpoint(
            out / "best.keras",
            monitor="val_accuracy",
            mode="max",
            save_best_only=True,
            initial_value_threshold=resumed.get("best_val_accuracy"),
        ),
        _State(),
    ]


def _train(cfg: TrainConfig) -> dict:
    import keras
    import tensorflow as tf

    from host_tools.augment import augment_batch, mixup

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    state_path = out / "state.json"
    keras.utils.set_random_seed(cfg.seed)
    # Same seed, same weights: without this, multi-threaded CPU kernels sum in varying order.
    tf.config.experimental.enable_op_determinism()
    d = _load_data(cfg, state_path)
    aug = cfg.augment

    def _train_map(x, y):
        return mixup(augment_batch(x, aug, (d.norm.mean, d.norm.std)), y, aug)

    train_ds = (
        tf.data.Dataset.from_tensor_slices((d.x_train, d.t_train))
        .shuffle(len(d.y_train), seed=cfg.seed, reshuffle_each_iteration=True)
        .batch(cfg.batch_size)
        .map(_train_map, num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(tf.data.AUTOTUNE)
    )
    val_ds = tf.data.Dataset.from_tensor_slices((d.x_val, tf.one_hot(d.y_val, NUM_CLASSES))).batch(512)

    last_ckpt = out / "last.keras"
    resumed: dict = {}
    if cfg.resume and last_ckpt.exists() and state_path.exists():
        resumed = json.loads(state_path.read_text())
        model = keras.models.load_model(last_ckpt)
        print(
            f"resuming from {last_ckpt} after epoch {resumed['epochs_done']} "
            f"(best PublicTest {resumed.get('best_val_accuracy')})"
        )
        if _policy(model) != keras.config.dtype_policy().name:
            print(f"the checkpoint computes in {_policy(model)}; continuing in it, not in {cfg.precision}")
    else:
        model = _compiled_model(cfg, int(np.ceil(len(d.y_train) / cfg.batch_size)))
    initial_epoch = int(resumed.get("epochs_done", 0))
    t_start = time.time()
    if initial_epoch < cfg.epochs:
        model.fit(
            train_ds,
            validation_data=val_ds,
            epochs=cfg.epochs,
            initial_epoch=initial_epoch,
            callbacks=_callbacks(cfg, out, state_path, d.norm, resumed),
            shuffle=False,  # tf.data already reshuffles each epoch
            verbose=1 if sys.stdout.isatty() else 2,
        )
    train_seconds = float(resumed.get("train_seconds", 0.0)) + time.time() - t_start
    return _score(cfg, out, d, model, train_seconds)


def _score(cfg: TrainConfig, out: Path, d: _Data, model, train_seconds: float) -> dict:
    """Score the best checkpoint as it will be exported; write metrics.json and the plots."""
    import tensorflow as tf

    from host_tools.model import load_float32

    best = load_float32(out / "best.keras")
    rep = metrics.report(d.y_val, best.predict(d.x_val, batch_size=512, verbose=0))
    summary = {
        "publictest": dict(rep),
        "train_seconds": round(train_seconds, 1),
        "epochs": cfg.epochs,
        "best_epoch": _best_epoch(out / "log.csv"),
        "train_rows": len(d.y_train),
        "machine": machine_line(),
        "tensorflow": tf.__version__,
        "precision": _policy(model),  # the checkpoint's on --resume, whatever --precision said
        "teachers": [asdict(t) for t in d.teachers],
        "normalization": asdict(d.norm),
        "config": asdict(cfg),
    }
    if "PrivateTest" in d.dataset.splits and not cfg.limit:
        priv = d.dataset.split("PrivateTest")
        x_priv = normalize(priv.x, d.norm)[..., None]
        summary["privatetest"] = metrics.report(priv.y, best.predict(x_priv, batch_size=512, verbose=0))
    (out / "metrics.json").write_text(json.dumps(summary, indent=2))
    plots.training_curves(out / "log.csv", out / "training_curves.png")
    plots.confusion(rep["confusion_matrix"], out / "confusion_matrix.png")
    print(metrics.format_table(rep, title=f"best checkpoint on PublicTest (epoch {summary['best_epoch']})"))
    print(
        f"training wall time {train_seconds / 60:.1f} min ({summary['precision']}) on {summary['machine']}; "
        f"outputs in {out}"
    )
    return summary


def _policy(model) -> str:
    """The dtype policy the model computes in (its first layer with weights; the softmax is float32 in any)."""
    return next(layer.dtype_policy.name for layer in model.layers if layer.weights)


def _best_epoch(log_csv: Path) -> int:
    import csv

    with open(log_csv, newline="") as fh:
        rows = list(csv.DictReader(fh))
    return int(max(rows, key=lambda r: float(r["val_accuracy"]))["epoch"]) + 1 if rows else 0
