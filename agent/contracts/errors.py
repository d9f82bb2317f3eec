"""Error types that carry a message meant for the person at the terminal.

CLIs catch :class:`FerError` and print its message on one line (exit 2);
anything else is a bug and keeps its traceback.
"""


class FerError(Exception):
    """A problem with user input (file, key, row, credentials) - not a bug."""


class ManifestError(FerError):
    """The model bundle or its manifest is missing, malformed or tampered."""


class ConfigError(FerError):
    """The agent configuration has an unknown key or a bad value."""


class InferenceError(FerError):
    """A model file cannot be loaded or run (tool exit, missing output, timeout); a failed frame is counted."""


MAX_LINE = 500  # characters of one error line: a million-label manifest must not print megabytes
MAX_LINES = 40  # a tool's stderr quoted in an error keeps its last lines


def clip(text: str, limit: int = MAX_LINE) -> str:
    """Each line of ``text`` at most ``limit`` characters (saying how much was left out), at most ``MAX_LINES``."""
    lines = str(text).split("\n")
    if len(lines) > MAX_LINES:
        lines = lines[:1] + [f"... ({len(lines) - MAX_LINES + 1} more lines)"] + lines[-(MAX_LINES - 2):]
    out = []
    for line in lines:
        if len(line) > limit:
            cut = f" ... ({len(line) - limit} more characters)"
            line = line[: max(0, limit - len(cut))] + cut
        out.append(line)
    return "\n".join(out)


def run_command(prog: str, args) -> int:
    """Run an argparse subcommand's ``func`` with the CLIs' error contract.

    A :class:`FerError` prints ``<prog> <command>: error: <message>`` on one
    line and exits 2; Ctrl-C exits 130; anything else is a bug and keeps its traceback.
    """
    import sys

    try:
        return int(args.func(args) or 0)
    except FerError as exc:
        print(clip(f"{prog} {args.command}: error: {exc}"), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog} {args.command}: interrupted", file=sys.stderr)
        return 130
