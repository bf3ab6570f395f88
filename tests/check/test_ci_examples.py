"""The copy-ready CI files in examples/ci say what the command accepts: the workflow's
`modelengine check` line parses with the real CLI parser, uploads the very SARIF file it
writes even when the check fails, and may write security events; the pre-commit hook's
command parses too, runs on the files that can change a model, and checks every
ModelEngine (not only the changed files)."""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path
from typing import Any

import yaml

from modelengine.cli import build_parser
from tests.export.helpers import EXAMPLES, gate_line

CI = EXAMPLES / "ci"


def parsed_check(command: str) -> Any:
    """The workflow's command line as the runner's shell gives it to the CLI (job env expanded)."""
    words = shlex.split(os.path.expandvars(command))
    assert words[:2] == ["modelengine", "check"], words
    return build_parser().parse_args(words[1:])


def test_workflow_uploads_the_sarif_its_check_writes(monkeypatch: Any) -> None:
    workflow = yaml.safe_load((CI / "modelengine-check.yml").read_text())
    assert workflow["permissions"]["security-events"] == "write"
    assert "pull_request" in workflow[True]  # YAML 1.1 reads the key `on` as true
    (job,) = workflow["jobs"].values()
    env = {k: str(v) for k, v in job.get("env", {}).items()}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    steps = job["steps"]
    (check_step,) = [s for s in steps if "run" in s and s["run"].lstrip().startswith("modelengine check")]
    args = parsed_check(check_step["run"])
    assert args.func.__module__ == "modelengine.check.command"
    outputs = dict(zip(args.format, [str(p) for p in args.output], strict=True))
    assert set(outputs) == {"sarif", "junit"}
    assert [Path(p) for p in args.paths] == [Path(env["MODELENGINE_PATHS"])]

    index = steps.index(check_step)
    (upload,) = [s for s in steps if str(s.get("uses", "")).startswith("github/codeql-action/upload-sarif@")]
    assert steps.index(upload) > index
    assert upload["with"]["sarif_file"] == outputs["sarif"]
    assert "!cancelled()" in upload["if"]  # runs after a failing check: when annotations matter
    (artifact,) = [s for s in steps if str(s.get("uses", "")).startswith("actions/upload-artifact@")]
    assert artifact["with"]["path"] == outputs["junit"] and "!cancelled()" in artifact["if"]
    install = next(s["run"] for s in steps[:index] if "run" in s and "pip install" in s["run"])
    assert "torch==2.13.0" in install and '"modelengine[check]"' in install


def test_check_extra_is_the_builder_stack_without_tensorrt() -> None:
    import tomllib

    root = EXAMPLES.parent
    extras = tomllib.loads((root / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert set(extras["check"]) == {r for r in extras["builder"] if not r.startswith("tensorrt")}


def test_pre_commit_hook_checks_every_modelengine_when_code_or_yaml_changes() -> None:
    config = yaml.safe_load((CI / "pre-commit-config.yaml").read_text())
    (repo,) = config["repos"]
    assert repo["repo"] == "local"
    (hook,) = repo["hooks"]
    assert hook["language"] == "system" and hook["pass_filenames"] is False
    args = build_parser().parse_args([*shlex.split(hook["entry"])[1:], *hook["args"]])
    assert args.func.__module__ == "modelengine.check.command" and args.quiet
    files = re.compile(hook["files"])
    for changed in (
        "examples/combinednet/combinednet.py",
        "examples/combinednet/modelengine.yaml",
        "a/b.yml",
    ):
        assert files.search(changed), changed
    assert not files.search("README.md")


DOCS = [EXAMPLES.parent / "README.md", CI / "README.md"]


def test_the_docs_check_commands_parse_and_their_sample_lines_are_current() -> None:
    commands = []
    samples = []
    for doc in DOCS:
        for line in doc.read_text().splitlines():
            text = line.strip().split("  #")[0].strip()
            if line.startswith("    ") and text.startswith("modelengine check"):
                commands.append(text)
            found = re.match(r"\s+examples/combinednet/combinednet\.py:(\d+): (\w+) \[([\w-]+)\]", line)
            if found:
                samples.append((int(found[1]), found[2], found[3]))
    assert len(commands) >= 3
    for command in commands:
        assert (
            build_parser().parse_args(shlex.split(command)[1:]).func.__module__ == "modelengine.check.command"
        )
    gate_of = {"frozen-branch-flips": ("SignedGateNet", "error"), "frozen-branch": ("CombinedNet", "warning")}
    assert {rule for _, _, rule in samples} == set(gate_of)
    for number, level, rule in samples:
        assert (number, level) == (gate_line(gate_of[rule][0]), gate_of[rule][1])
