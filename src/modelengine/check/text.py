"""The text and JSON reports of `modelengine check`.

Text is for a terminal or a CI log: one `path:line: level [rule] message` line per
finding (the form compilers print, which editors and CI logs link to its line), then one
line per ModelEngine file with its outcome, then a total. JSON holds the same facts for
scripts: per file its outcome, the branches the export met with their verdicts, and the
findings with repository-relative paths.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from modelengine import __version__
from modelengine.check.findings import FailOn, FileResult
from modelengine.check.paths import shown

JSON_SCHEMA_VERSION = 1


def render_text(results: list[FileResult], *, root: Path, fail_on: FailOn) -> str:
    lines = []
    for result in results:
        for f in result.findings:
            where = shown(f.file, root) + (f":{f.line}" if f.line else "")
            lines.append(f"{where}: {f.level} [{f.rule}] {f.message}")
    for result in results:
        detail = ", ".join(
            part
            for part in (
                result.name,
                f"method {result.method}" if result.method else None,
                f"{len(result.branches)} branch(es)" if result.branches else None,
                f"{result.seconds:.1f} s",
            )
            if part
        )
        lines.append(f"{result.outcome.upper():4}  {shown(result.spec_file, root)} ({detail})")
    counts = {o: sum(1 for r in results if r.outcome == o) for o in ("pass", "warn", "fail")}
    failing = sum(1 for r in results if r.fails(fail_on))
    lines.append(
        f"modelengine check: {len(results)} file(s): {counts['pass']} pass, {counts['warn']} warn, "
        f"{counts['fail']} fail; {failing} fail the run (--fail-on {fail_on})"
    )
    return "\n".join(lines) + "\n"


def render_json(results: list[FileResult], *, root: Path, fail_on: FailOn) -> str:
    doc: dict[str, Any] = {
        "schemaVersion": JSON_SCHEMA_VERSION,
        "tool": {"name": "modelengine check", "version": __version__},
        "failOn": fail_on,
        "passed": not any(r.fails(fail_on) for r in results),
        "files": [
            {
                "file": shown(r.spec_file, root),
                "modelengine": r.name,
                "method": r.method,
                "outcome": r.outcome,
                "failsRun": r.fails(fail_on),
                "seconds": round(r.seconds, 3),
                "samples": r.samples,
                "maxAbsError": r.max_abs_error,
                "branches": [
                    {"location": b.location, "verdict": b.verdict, "kept": b.kept} for b in r.branches
                ],
                "findings": [
                    {
                        "rule": f.rule,
                        "level": f.level,
                        "message": f.message,
                        "file": shown(f.file, root),
                        "line": f.line,
                    }
                    for f in r.findings
                ],
            }
            for r in results
        ],
    }
    return json.dumps(doc, indent=2) + "\n"
