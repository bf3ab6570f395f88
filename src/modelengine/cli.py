"""The `modelengine` command: one entry point, one small module per subcommand.

Each subcommand lives beside the code it drives (`modelengine.builder.command`,
`modelengine.runtime.command`, ...) and exposes `register(subparsers)`; this module only
wires them up, so `modelengine --help` imports neither torch nor kopf. Every failure the
user can fix ends as one line on stderr and a non-zero exit (2 for bad input, 1 for a
failed build or run); tracebacks are shown only with `--debug`.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from modelengine import __version__
from modelengine.logs import configure_logging

# (subcommand, module holding `register`)
_COMMANDS: list[tuple[str, str]] = [
    ("build", "modelengine.builder.command"),
    ("builder", "modelengine.builder.job"),
    ("push", "modelengine.builder.push"),
    ("inspect", "modelengine.builder.inspect"),
    ("demo", "modelengine.demo"),
    ("serve", "modelengine.runtime.command"),
    ("operator", "modelengine.operator.command"),
    ("crd", "modelengine.api.crd_command"),
]


class UserError(Exception):
    """Bad input or a failed step the user can act on: printed as one line."""

    exit_code = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="modelengine",
        description="Turn PyTorch models into inference engines per GPU kind, store and serve them.",
    )
    parser.add_argument("--version", action="version", version=f"modelengine {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv: debug)")
    parser.add_argument("--log-format", choices=["text", "json"], default="text", help="log line format")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module_name in _COMMANDS:
        try:
            module = importlib.import_module(module_name)
        except ImportError as err:
            # An optional extra is missing; the command explains itself when invoked.
            missing = str(err)
            sub = subparsers.add_parser(name, help=f"(unavailable: {missing})")
            sub.set_defaults(func=_unavailable(name, missing))
            continue
        module.register(subparsers)
    return parser


def _unavailable(name: str, why: str):  # type: ignore[no-untyped-def]
    def run(_args: argparse.Namespace) -> int:
        raise UserError(f"`modelengine {name}` needs an optional dependency that is not installed: {why}")

    return run


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(verbosity=args.verbose, fmt=args.log_format)
    try:
        code = args.func(args)
        return int(code or 0)
    except KeyboardInterrupt:
        print("modelengine: interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        if args.debug:
            raise
        code = getattr(err, "exit_code", 1)
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        logging.getLogger("modelengine").debug("command failed", exc_info=True)
        print(f"modelengine {args.command}: error: {message}", file=sys.stderr)
        return int(code)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
