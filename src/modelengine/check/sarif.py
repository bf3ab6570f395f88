"""The SARIF 2.1.0 report: findings as code-scanning results on their source lines.

One run of one tool (`modelengine`) whose driver lists every rule, so `ruleIndex` is
stable across runs. Each finding is a result with its rule's id, its level (`error` or
`warning`), a one-line message, and one physical location: the repository-relative path
(against `%SRCROOT%`, the `--root` folder) and the line. GitHub code scanning turns that
into an annotation on the frozen `if` in a pull request. The ModelEngine YAML the
finding came from is a related location, and a partial fingerprint built from the rule,
the path, the source line's text and the YAML keeps an alert the same alert when lines
above it move.
"""

from __future__ import annotations

import hashlib
import json
import linecache
from pathlib import Path
from typing import Any

from modelengine import __version__
from modelengine.check.findings import RULES, FileResult, Finding
from modelengine.check.paths import relative

SARIF_SCHEMA = "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"
SRCROOT = "%SRCROOT%"


def render_sarif(results: list[FileResult], *, root: Path) -> str:
    rule_index = {rule.id: i for i, rule in enumerate(RULES)}
    sarif_results = [
        _result(finding, result, root, rule_index[finding.rule])
        for result in results
        for finding in result.findings
    ]
    doc: dict[str, Any] = {
        "$schema": SARIF_SCHEMA,
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "modelengine",
                        "version": __version__,
                        "rules": [
                            {
                                "id": rule.id,
                                "name": rule.name,
                                "shortDescription": {"text": rule.summary},
                                "fullDescription": {"text": f"{rule.summary}. {rule.help}"},
                                "help": {"text": rule.help},
                                "defaultConfiguration": {"level": rule.level},
                            }
                            for rule in RULES
                        ],
                    }
                },
                "originalUriBaseIds": {SRCROOT: {"uri": root.resolve().as_uri() + "/"}},
                "artifacts": [{"location": _artifact(r.spec_file, root)} for r in results],
                "invocations": [{"executionSuccessful": True}],
                "results": sarif_results,
            }
        ],
    }
    return json.dumps(doc, indent=2) + "\n"


def _artifact(path: Path, root: Path) -> dict[str, str]:
    rel = relative(path, root)
    if rel is None:
        return {"uri": path.resolve().as_uri()}
    return {"uri": rel, "uriBaseId": SRCROOT}


def _location(path: Path, line: int | None, root: Path) -> dict[str, Any]:
    physical: dict[str, Any] = {"artifactLocation": _artifact(path, root)}
    if line is not None:
        physical["region"] = {"startLine": line}
    return {"physicalLocation": physical}


def _result(finding: Finding, result: FileResult, root: Path, index: int) -> dict[str, Any]:
    spec_path = relative(result.spec_file, root) or result.spec_file.as_posix()
    code = linecache.getline(str(finding.file), finding.line).strip() if finding.line else ""
    key = "\0".join((finding.rule, relative(finding.file, root) or finding.file.as_posix(), code, spec_path))
    out: dict[str, Any] = {
        "ruleId": finding.rule,
        "ruleIndex": index,
        "level": finding.level,
        "message": {"text": finding.message},
        "locations": [_location(finding.file, finding.line, root)],
        "partialFingerprints": {"modelengineFinding/v1": hashlib.sha256(key.encode()).hexdigest()},
    }
    if finding.file.resolve() != result.spec_file.resolve():
        related = _location(result.spec_file, None, root)
        related["id"] = 0
        related["message"] = {"text": f"checked by {spec_path}"}
        out["relatedLocations"] = [related]
    return out
