"""The `modelengine` command: one entry point, one small module per subcommand.

Each subcommand lives beside the code it drives (`modelengine.builder.command`,
`modelengine.runtime.command`, ...) and exposes `register(subparsers)`; this module only
wires them up, so `modelengine --help` imports neither torch nor kopf.

Every failure ends as one redacted line on stderr and an exit code that depends only on
the error, never on `--debug` (which adds the redacted traceback above the line):
2 bad input (`InputError`: spec, model, request, flags, a missing object the user named),
1 the work failed on valid input (`BuildFailed`, and any unexpected error),
3 infrastructure (`InfrastructureError`: store, network; also OSError and the AWS/HTTP
client libraries' own errors). See `exit_code_of`.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import traceback
from collections.abc import Sequence

from modelengine import __version__
from modelengine.errors import EXIT_FAILED, EXIT_INFRASTRUCTURE, InputError, first_line
from modelengine.logs import configure_logging, redact

# (subcommand, module holding `register`)
_COMMANDS: list[tuple[str, str]] = [
    ("build", "modelengine.builder.command"),
    ("check", "modelengine.check.command"),
    ("builder", "modelengine.builder.job"),
    ("push", "modelengine.builder.push"),
    ("inspect", "modelengine.builder.inspect"),
    ("demo", "modelengine.demo"),
    ("serve", "modelengine.runtime.command"),
    ("operator", "modelengine.operator.command"),
    ("crd", "modelengine.api.crd_command"),
]


class UserError(InputError):
    """Bad input the user can act on: printed as one line, exit 2."""


# Errors of client libraries that mean the network or a remote service failed.
_INFRASTRUCTURE_MODULES = ("botocore", "boto3", "s3transfer", "urllib3", "aiohttp", "kubernetes", "kopf")


def exit_code_of(err: BaseException) -> int:
    """The exit code for an error: its own `exit_code` (the `modelengine.errors` classes and
    older ones carrying the attribute), 3 for I/O and client-library faults, else 1."""
    code = getattr(err, "exit_code", None)
    if isinstance(code, int) and not isinstance(code, bool):
        return code
    if isinstance(err, OSError) or type(err).__module__.split(".")[0] in _INFRASTRUCTURE_MODULES:
        return EXIT_INFRASTRUCTURE
    return EXIT_FAILED


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The whole parser; given the command line, only the chosen subcommand's module is
    imported (the others get a bare entry): `modelengine operator` or `serve` should not pay
    for the build pipeline's imports (numpy, the exporters) at every start."""
    parser = argparse.ArgumentParser(
        prog="modelengine",
        description="Turn PyTorch models into inference engines per GPU kind, store and serve them.",
    )
    parser.add_argument("--version", action="version", version=f"modelengine {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv: debug)")
    parser.add_argument("--log-format", choices=["text", "json"], default="text", help="log line format")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    chosen = _chosen_command(argv) if argv is not None else None
    for name, module_name in _COMMANDS:
        if chosen is not None and name != chosen:
            subparsers.add_parser(name)  # listed in usage errors; never dispatched to
            continue
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


def _chosen_command(argv: Sequence[str]) -> str | None:
    """The subcommand named on the command line, if it is one (None: build them all)."""
    words = iter(argv)
    for word in words:
        if word == "--log-format":
            next(words, None)  # its value
        elif not word.startswith("-"):
            return word if word in dict(_COMMANDS) else None
    return None


def _unavailable(name: str, why: str):  # type: ignore[no-untyped-def]
    def run(_args: argparse.Namespace) -> int:
        raise UserError(f"`modelengine {name}` needs an optional dependency that is not installed: {why}")

    return run


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(words)
    args = parser.parse_args(words)
    configure_logging(verbosity=args.verbose, fmt=args.log_format)
    try:
        code = args.func(args)
        return int(code or 0)
    except KeyboardInterrupt:
        print("modelengine: interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        if args.debug:
            print(redact("".join(traceback.format_exception(err))), file=sys.stderr, end="")
        else:
            logging.getLogger("modelengine").debug("command failed", exc_info=True)
        print(f"modelengine {args.command}: error: {redact(first_line(err))}", file=sys.stderr)
        return exit_code_of(err)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
