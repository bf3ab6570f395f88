"""`modelengine check [-f] FILE|FOLDER ...`: load, export and verify, then report.

Exit codes (documented in `--help` and the README):

- 0: no file fails the run: every file passes, or has only findings below `--fail-on`;
- 1: a file fails the run: an error finding (a frozen branch that flips, an export or
  spec refusal, an output mismatch), or a warning under `--fail-on warning`;
- 2: the command itself was used wrongly (no such file, no ModelEngine in a folder,
  `--output` without a matching `--format`);
- 3: an infrastructure fault outside the model (as every command).

Warnings do not fail the run by default, so adopting the check does not break a
repository whose seed-style harmless gates are already merged; `--fail-on warning` makes
them fail, `--fail-on never` only reports (let code scanning decide).

Reports: `--format text|json|sarif|junit` (repeatable) with `--output FILE` (repeatable,
paired with the formats in order); without `--output` the one format goes to stdout. When
every report goes to a file the text report is printed too, so a CI log shows the
findings. Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from modelengine.errors import InputError

FORMATS = ("text", "json", "sarif", "junit")
FAIL_ON = ("error", "warning", "never")
_MODELENGINE_KIND = re.compile(r"^kind:\s*ModelEngine\s*$", re.MULTILINE)


class CheckUsageError(InputError):
    """The command was given paths or flags it cannot work with."""


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "check",
        help="load, export and verify ModelEngine files (no build, no store); SARIF/JUnit/JSON reports",
        description=(
            "Check ModelEngine files the way a build would before building: the spec, the model, the ONNX"
            " export and its verification against PyTorch, including every branch tracing froze. Nothing is"
            " built or stored. Exit 0: nothing fails the run; 1: a file fails it (an error finding, or a"
            " warning with --fail-on warning); 2: bad arguments; 3: infrastructure fault."
        ),
    )
    p.add_argument(
        "paths", nargs="*", type=Path, metavar="PATH", help="ModelEngine YAML, or a folder searched for them"
    )
    p.add_argument(
        "-f", "--file", action="append", default=[], type=Path, help="ModelEngine YAML (repeatable)"
    )
    p.add_argument(
        "--format",
        action="append",
        choices=FORMATS,
        help="report format (repeatable, paired in order with --output); default text",
    )
    p.add_argument(
        "--output", action="append", type=Path, metavar="FILE", help="write the report here (repeatable)"
    )
    p.add_argument(
        "--fail-on",
        choices=FAIL_ON,
        default="error",
        help="lowest finding level that fails the run (exit 1); default error",
    )
    p.add_argument(
        "--root",
        type=Path,
        default=None,
        help="repository root that report paths are relative to (default: the current folder)",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    p.set_defaults(func=run)


def spec_files(paths: list[Path]) -> list[Path]:
    """The files named, and the ModelEngine YAMLs under the folders named (hidden folders
    and caches skipped), in order, each once."""
    found: list[Path] = []
    for path in paths:
        if path.is_file():
            found.append(path)
        elif path.is_dir():
            inside = [
                f
                for f in sorted(path.rglob("*.y*ml"))
                if f.suffix in (".yaml", ".yml")
                and not any(
                    part.startswith(".") or part == "__pycache__" for part in f.relative_to(path).parts[:-1]
                )
                and _MODELENGINE_KIND.search(_text(f))
            ]
            if not inside:
                raise CheckUsageError(f"{path}: no ModelEngine YAML (kind: ModelEngine) in this folder")
            found.extend(inside)
        else:
            raise CheckUsageError(f"{path}: no such file or folder")
    unique: dict[Path, Path] = {}
    for f in found:
        unique.setdefault(f.resolve(), f)
    return list(unique.values())


def _text(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def reports(formats: list[str] | None, outputs: list[Path] | None) -> list[tuple[str, Path | None]]:
    """(format, file or None for stdout) pairs from the flags."""
    formats = formats or ["text"]
    outputs = outputs or []
    if outputs and len(outputs) != len(formats):
        raise CheckUsageError(
            f"{len(formats)} --format and {len(outputs)} --output: give one --output per --format, in the same order"
        )
    if not outputs:
        if len(formats) > 1:
            raise CheckUsageError(
                "several --format need one --output each (only one report can go to stdout)"
            )
        return [(formats[0], None)]
    return list(zip(formats, [*outputs], strict=True))


def run(args: argparse.Namespace) -> int:
    from modelengine.check.findings import FailOn
    from modelengine.check.run import check_file

    pairs = reports(args.format, args.output)
    files = spec_files([*args.file, *args.paths])
    if not files:
        raise CheckUsageError("nothing to check: name ModelEngine files or folders (PATH or -f FILE)")
    root = (args.root or Path.cwd()).resolve()
    fail_on = cast(FailOn, args.fail_on)
    quiet = bool(args.quiet)
    detail = not quiet and getattr(args, "verbose", 0) > 0

    def say(line: str) -> None:
        if not quiet:
            print(line, file=sys.stderr, flush=True)

    stage: Callable[[str], None] = say if detail else _silent
    results = []
    for i, path in enumerate(files, 1):
        say(f"[{i}/{len(files)}] checking {path}")
        result = check_file(path, progress=stage)
        say(
            f"[{i}/{len(files)}] {result.outcome} ({len(result.findings)} finding(s), {result.seconds:.1f} s)"
        )
        results.append(result)

    for fmt, output in pairs:
        text = render(fmt, results, root=root, fail_on=fail_on)
        if output is None:
            sys.stdout.write(text)
        else:
            output.parent.mkdir(parents=True, exist_ok=True)
            output.write_text(text)
            say(f"wrote {fmt} report {output}")
    if all(output is not None for _, output in pairs):
        sys.stdout.write(render("text", results, root=root, fail_on=fail_on))
    return 1 if any(r.fails(fail_on) for r in results) else 0


def _silent(_: str) -> None:
    return None


def render(fmt: str, results: list[Any], *, root: Path, fail_on: Any) -> str:
    from modelengine.check.junit import render_junit
    from modelengine.check.sarif import render_sarif
    from modelengine.check.text import render_json, render_text

    if fmt == "sarif":
        return render_sarif(results, root=root)
    if fmt == "junit":
        return render_junit(results, root=root, fail_on=fail_on)
    if fmt == "json":
        return render_json(results, root=root, fail_on=fail_on)
    return render_text(results, root=root, fail_on=fail_on)
