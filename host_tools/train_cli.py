"""``fer-host train`` command line: flags, checked by :class:`host_tools.train.TrainConfig`, then the run."""

from __future__ import annotations

import dataclasses

from host_tools.augment import CAMERA_PRESET, AugmentConfig
from host_tools.train import LABEL_SOURCES, OPTIMIZERS, PRECISIONS, TrainConfig, train


def register(sub) -> None:
    d = TrainConfig(data="")
    a = d.augment
    p = sub.add_parser(
        "train",
        help="train the classifier on FER2013 (CSV or image folders)",
        description="Train on Training, select on PublicTest; writes checkpoints, log.csv, plots and metrics.json.",
    )
    p.add_argument("--data", required=True, help="FER2013 .csv/.csv.gz or image-folder root")
    p.add_argument("--out", default=d.out, help=f"output directory (default {d.out})")
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr, help="peak learning rate (after warm-up)")
    p.add_argument("--weight-decay", type=float, default=d.weight_decay)
    p.add_argument("--warmup-epochs", type=float, default=d.warmup_epochs)
    p.add_argument("--label-smoothing", type=float, default=d.label_smoothing)
    p.add_argument("--dropout", type=float, default=d.dropout)
    p.add_argument(
        "--optimizer",
        choices=OPTIMIZERS,
        default=d.optimizer,
        help="adamw, or sgd with Nesterov momentum 0.9 (weight decay is decoupled in both: "
        "keras scales it by the learning rate, so SGD needs ~10x the coupled-L2 value)",
    )
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        default=d.precision,
        help="mixed_bfloat16 computes in bfloat16 with float32 weights (24 %% faster epochs on this "
        "AVX512-BF16 CPU); auto picks it on CPUs with AVX512-BF16 or AMX, float32 elsewhere; "
        "export is float32 either way",
    )
    p.add_argument(
        "--ema",
        type=float,
        default=d.ema,
        help="weight moving-average momentum for validation and best.keras, e.g. 0.998 (0 = off)",
    )
    p.add_argument("--widths", default=",".join(map(str, d.widths)), help="conv widths per stage")
    p.add_argument("--convs", default=",".join(map(str, d.convs)), help="3x3 convs per stage (one count per width)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--limit", type=int, default=0, help="use at most N rows per split (smoke runs)")
    p.add_argument("--skip-bad-rows", action="store_true", help="skip and count bad rows instead of stopping")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.keras")
    p.add_argument(
        "--init-from",
        help="start from these weights with a fresh schedule (warm restart, fine-tuning): a .keras checkpoint, or a "
        "model bundle whose network has the same shape (its frozen graph; its normalisation is kept)"
    )
    p.add_argument(
        "--teacher",
        action="append",
        default=[],
        metavar="BUNDLE",
        help="distil from this model bundle (repeat for an ensemble): targets become "
        "(1 - alpha) * label + alpha * teacher probabilities (face and mirror averaged)",
    )
    p.add_argument("--distill-alpha", type=float, default=d.distill_alpha, help="teacher weight in the targets, 0..1")
    p.add_argument(
        "--distill-temperature",
        type=float,
        default=d.distill_temperature,
        help="soften the teacher's probabilities as softmax(logits / T)",
    )
    p.add_argument(
        "--labels",
        choices=LABEL_SOURCES,
        default=d.labels,
        help="training targets: FER2013's one-hot labels, or the FER+ crowd-vote distributions (rows whose "
        "votes say unknown or not-a-face dropped); PublicTest is scored on FER2013's labels either way",
    )
    p.add_argument("--ferplus", help="FER+ votes file (default: ferplus_train_publictest.csv.gz beside --data)")
    p.add_argument(
        "--ferplus-weight",
        type=float,
        default=d.ferplus_weight,
        help="with --labels ferplus: targets = weight * votes + (1 - weight) * FER2013 one-hot",
    )
    p.add_argument(
        "--camera",
        action="store_true",
        help=f"camera augmentation: contrast, gamma, brightness, side light, blur, noise, JPEG and aspect "
        f"jitter on a share of the faces ({', '.join(f'{k} {v}' for k, v in CAMERA_PRESET.items())})",
    )
    p.add_argument("--camera-prob", type=float, help="share of faces given the camera changes (implies --camera)")
    p.add_argument("--no-flip", action="store_true")
    p.add_argument("--rotation", type=float, default=a.rotation_deg, help="max rotation, degrees")
    p.add_argument("--scale", type=float, default=a.scale, help="max zoom in/out fraction")
    p.add_argument("--shift", type=float, default=a.shift_px, help="max shift in pixels (= reflect-pad crop)")
    p.add_argument("--erase-prob", type=float, default=a.erase_prob, help="random-erasing probability")
    p.add_argument(
        "--mixup", type=float, default=a.mixup_alpha, help="mixup Beta(alpha, alpha) parameter, e.g. 0.2 (0 = off)"
    )
    p.add_argument("--mixup-prob", type=float, default=a.mixup_prob, help="share of faces mixed when --mixup > 0")
    p.set_defaults(func=_run)


def _int_list(flag: str, text: str) -> tuple[int, ...]:
    from agent.contracts.errors import FerError

    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise FerError(f"{flag} must be comma-separated integers, got {text!r}") from None


def _camera(args, aug: AugmentConfig) -> AugmentConfig:
    """``aug`` with the camera preset when ``--camera`` (or ``--camera-prob``) is given."""
    if not (args.camera or args.camera_prob is not None):
        return aug
    preset = dict(CAMERA_PRESET)
    if args.camera_prob is not None:
        preset["camera_prob"] = args.camera_prob
    return dataclasses.replace(aug, **preset)


def _run(args) -> int:
    from agent.contracts.errors import FerError

    widths, convs = _int_list("--widths", args.widths), _int_list("--convs", args.convs)
    try:
        cfg = TrainConfig(
            data=args.data,
            out=args.out,
            epochs=args.epochs,
            batch_size=args.batch_size,
            lr=args.lr,
            weight_decay=args.weight_decay,
            warmup_epochs=args.warmup_epochs,
            label_smoothing=args.label_smoothing,
            dropout=args.dropout,
            optimizer=args.optimizer,
            precision=args.precision,
            ema=args.ema,
            widths=widths,
            convs=convs,
            seed=args.seed,
            limit=args.limit,
            skip_bad_rows=args.skip_bad_rows,
            resume=args.resume,
            init_from=args.init_from,
            teachers=tuple(args.teacher),
            distill_alpha=args.distill_alpha,
            distill_temperature=args.distill_temperature,
            labels=args.labels,
            ferplus=args.ferplus,
            ferplus_weight=args.ferplus_weight,
            augment=_camera(args, AugmentConfig(
                flip=not args.no_flip,
                rotation_deg=args.rotation,
                scale=args.scale,
                shift_px=args.shift,
                erase_prob=args.erase_prob,
                mixup_alpha=args.mixup,
                mixup_prob=args.mixup_prob,
            )),
        )
    except ValueError as exc:  # TrainConfig's own checks, worded for the command line
        raise FerError(str(exc)) from None
    train(cfg)
    return 0
