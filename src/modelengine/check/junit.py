"""The JUnit XML report, for CI dashboards (GitLab, Jenkins, Azure Pipelines, ...).

One test suite, one test case per ModelEngine file (`name` its repository-relative path,
`classname` its `namespace/name`). A file that fails the run under `--fail-on` gets a
`<failure>` whose `type` is the first failing finding's rule and whose text lists every
finding as `path:line: level [rule] message`; findings that do not fail the run (warnings
under the default `--fail-on error`) go to the case's `<system-out>`, so dashboards show
them without turning the case red.
"""

from __future__ import annotations

import socket
import xml.etree.ElementTree as ET
from pathlib import Path

from modelengine.check.findings import FailOn, FileResult, Finding
from modelengine.check.paths import shown
from modelengine.errors import utc_now


def _line(finding: Finding, root: Path) -> str:
    where = shown(finding.file, root) + (f":{finding.line}" if finding.line else "")
    return f"{where}: {finding.level} [{finding.rule}] {finding.message}"


def render_junit(results: list[FileResult], *, root: Path, fail_on: FailOn) -> str:
    failures = sum(1 for r in results if r.fails(fail_on))
    seconds = f"{sum(r.seconds for r in results):.3f}"
    suites = ET.Element(
        "testsuites",
        name="modelengine check",
        tests=str(len(results)),
        failures=str(failures),
        errors="0",
        time=seconds,
    )
    suite = ET.SubElement(
        suites,
        "testsuite",
        name="modelengine check",
        tests=str(len(results)),
        failures=str(failures),
        errors="0",
        skipped="0",
        time=seconds,
        timestamp=utc_now(),
        hostname=socket.gethostname(),
    )
    for result in results:
        case = ET.SubElement(
            suite,
            "testcase",
            name=shown(result.spec_file, root),
            classname=result.name or "modelengine",
            time=f"{result.seconds:.3f}",
        )
        failing = [
            f
            for f in result.findings
            if result.fails(fail_on) and (f.level == "error" or fail_on == "warning")
        ]
        if failing:
            failure = ET.SubElement(case, "failure", message=failing[0].message, type=failing[0].rule)
            failure.text = "\n".join(_line(f, root) for f in failing)
        rest = [f for f in result.findings if f not in failing]
        if rest:
            ET.SubElement(case, "system-out").text = "\n".join(_line(f, root) for f in rest)
    ET.indent(suites)
    return ET.tostring(suites, encoding="unicode", xml_declaration=True) + "\n"
