"""`modelengine crd`: print the generated CRD YAML, or write it to a file.

Design: the command only renders `crd.crd_yaml()` and lives beside the API models it is
generated from; it imports no kopf or kubernetes client, so it runs from the base install
(pydantic + PyYAML) and in CI's drift test. Writing goes through a temporary file and a
rename, so an interrupted run never leaves half a CRD.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from modelengine.api.crd import crd_yaml
from modelengine.errors import InputError


class CrdWriteError(InputError):
    """The output file cannot be written; one line naming the path."""


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "crd",
        help="print the ModelEngine CustomResourceDefinition (generated from the API models)",
        description="Print the ModelEngine CRD YAML, generated from the pydantic API models, "
        "to stdout or to a file. Apply it with `modelengine crd | kubectl apply -f -`.",
    )
    parser.add_argument("-o", "--output", metavar="FILE", help="write the YAML to FILE instead of stdout")
    parser.set_defaults(func=run)


def write_atomic(path: Path, text: str) -> None:
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.is_dir():
        raise CrdWriteError(f"{path}: directory {directory} does not exist")
    try:
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except OSError as err:
        raise CrdWriteError(f"{path}: cannot write: {err.strerror}") from None


def run(args: argparse.Namespace) -> int:
    text = crd_yaml()
    if args.output in (None, "-"):
        sys.stdout.write(text)
    else:
        write_atomic(Path(args.output), text)
        print(f"wrote {args.output}", file=sys.stderr)
    return 0
