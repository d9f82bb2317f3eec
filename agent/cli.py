"""``fer-agent``: run the on-device agent, check its config, demo, benchmark, health.

User errors (:class:`agent.contracts.errors.FerError`: a bad key, a missing file, an
unreachable model) print one line naming the file/key and exit 2.
"""

from __future__ import annotations

import argparse
import logging
import sys

from agent import __version__
from agent.contracts.errors import run_command


def _one_of(names: tuple[str, ...]) -> str:
    return ", ".join(names[:-1]) + f" or {names[-1]}" if len(names) > 1 else "".join(names)


def _add_run_overrides(p: argparse.ArgumentParser) -> None:
    from agent.detectors import DETECTORS
    from agent.runtimes import backend_choices

    p.add_argument("--config", "-c", metavar="YAML", help="agent configuration file (default: all defaults)")
    p.add_argument(
        "--source", help="override source.uri: camera index, /dev/videoN, file, directory, URL, GStreamer pipeline"
    )
    p.add_argument("--backend", help=f"override backend.type: {_one_of(backend_choices())}")
    p.add_argument("--detector", help=f"override detector.type: {_one_of(DETECTORS.names())}")
    p.add_argument("--broker", metavar="HOST[:PORT]", help="override mqtt.host (and mqtt.port)")
    p.add_argument("--bundle", metavar="DIR", help="override model.bundle")
    p.add_argument("--preview", metavar="PATH", help="write annotated frames: an .mp4 file or a directory of PNGs")
    p.add_argument("--max-frames", type=int, metavar="N", help="stop after N frames")
    p.add_argument("--log-level", help="override log_level: debug, info, warning or error")


def _load(args: argparse.Namespace):
    from agent.config import apply_overrides, load_config

    cfg = load_config(args.config)
    return apply_overrides(
        cfg,
        source=args.source,
        backend=args.backend,
        broker=args.broker,
        bundle=args.bundle,
        preview=args.preview,
        max_frames=args.max_frames,
        log_level=args.log_level,
        detector=args.detector,
    )


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )


def cmd_run(args: argparse.Namespace) -> int:
    from agent.config import redacted
    from agent.runner import run_agent

    cfg = _load(args)
    _setup_logging(cfg.log_level)
    logging.getLogger(__name__).debug("effective config: %s", redacted(cfg))
    run_agent(cfg)
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    from agent.config import load_config

    load_config(args.file)
    print(f"{args.file}: ok")
    return 0


def cmd_print_config(args: argparse.Namespace) -> int:
    from agent.config import load_config, render_config

    sys.stdout.write(render_config(load_config(args.config) if args.config else None))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from agent.demo import demo_command

    _setup_logging(args.log_level)
    return demo_command(args)


def cmd_bench(args: argparse.Namespace) -> int:
    from agent.bench import bench_command

    _setup_logging(args.log_level)
    return bench_command(args)


def cmd_health(args: argparse.Namespace) -> int:
    from agent.health import health_command

    return health_command(args)


def cmd_record(args: argparse.Namespace) -> int:
    from agent.record import record_command

    return record_command(args)


def cmd_report(args: argparse.Namespace) -> int:
    from agent.report import report_command

    return report_command(args)


def build_parser() -> argparse.ArgumentParser:
    from agent import bench, demo, health, record, report

    parser = argparse.ArgumentParser(
        prog="fer-agent", description="Facial-expression recognition agent: camera -> faces -> emotions -> MQTT."
    )
    parser.add_argument("--version", action="version", version=f"fer-agent {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("run", help="run the agent (until the source ends or SIGINT/SIGTERM)")
    _add_run_overrides(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("check-config", help="validate a config file; errors name the key and the allowed values")
    p.add_argument("file")
    p.set_defaults(func=cmd_check_config)

    p = sub.add_parser("print-config", help="print the full default config (or FILE's effective config) with comments")
    p.add_argument("--config", "-c", metavar="YAML", help="show this file's values (secrets are never printed)")
    p.set_defaults(func=cmd_print_config)

    p = sub.add_parser(
        "demo", help="offline demo: generated clip of a real face -> agent -> local MQTT -> printed events"
    )
    demo.add_arguments(p)
    p.add_argument("--log-level", default="warning", choices=("debug", "info", "warning", "error"))
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("bench", help="measure frames/s and ms per stage; write JSON + markdown to benchmarks/results")
    bench.add_arguments(p)
    p.add_argument("--log-level", default="warning", choices=("debug", "info", "warning", "error"))
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("record", help="subscribe to a device's topics and write every message as JSON Lines")
    record.add_arguments(p)
    p.set_defaults(func=cmd_record)

    p = sub.add_parser("report", help="draw a recording (fer-agent record) as a PNG: faces, label shares, face count")
    report.add_arguments(p)
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("health", help="is the running agent healthy? (exit 0 yes, 1 no)")
    health.add_health_arguments(p)
    p.set_defaults(func=cmd_health)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return run_command("fer-agent", args)


if __name__ == "__main__":
    sys.exit(main())
