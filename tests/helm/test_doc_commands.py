"""Every `helm` and `kubectl` command in README.md, docs/ and the examples' READMEs works as written.

Commands are taken from the documents themselves (indented or fenced lines, `$ ` prompts,
`\\` continuations, `|` pipes, trailing `# comments`), so a doc cannot drift from the chart:

- `helm install|upgrade|template NAME CHART FLAGS...` is rendered with `helm template` and
  the same flags (upgrade-only flags such as `--reuse-values` dropped: nothing to reuse);
  the values schema refuses a misspelled key, and every `--set` value must show up in
  the rendered manifests (a key the chart ignores would not).
- `kubectl ...`: every flag must be one kubectl accepts for that command (from
  `kubectl create secret generic --help` and the like, and `kubectl options`); every `-f FILE` must exist and hold valid
  objects (built-in kinds against the Kubernetes schema, ModelEngines against the CRD's
  schema); `modelengine crd | kubectl apply ... -f -` must produce the chart's CRD.
"""

from __future__ import annotations

import functools
import itertools
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.helm.test_chart import CHART, HELM, ROOT, needs_helm

DOCS = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md"), *(ROOT / "examples").glob("*/README.md")])
UPGRADE_ONLY_FLAGS = {"--reuse-values", "--reset-values", "--reset-then-reuse-values", "--install"}
KUBECTL = ROOT / ".tools" / "kubectl"


@dataclass(frozen=True)
class DocCommand:
    where: str
    pipeline: tuple[tuple[str, ...], ...]  # the commands of one line, piped in order

    def __str__(self) -> str:
        return f"{self.where}: " + " | ".join(shlex.join(c) for c in self.pipeline)


def _logical_lines(text: str) -> list[tuple[int, str]]:
    out: list[tuple[int, str]] = []
    pending, start = "", 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if line.startswith("$ "):
            line = line[2:]
        if not pending:
            start = number
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        out.append((start, pending + line))
        pending = ""
    return out


def doc_commands() -> list[DocCommand]:
    found = []
    for path in DOCS:
        for number, line in _logical_lines(path.read_text()):
            if not re.match(r"^(helm|kubectl|modelengine crd)\b", line):
                continue
            try:
                words = shlex.split(line, comments=True)
            except ValueError:
                continue  # prose that happens to start with the word
            pipeline: list[tuple[str, ...]] = []
            current: list[str] = []
            for word in words:
                if word == "|":
                    pipeline.append(tuple(current))
                    current = []
                else:
                    current.append(word)
            pipeline.append(tuple(current))
            if any(c and c[0] in ("helm", "kubectl") for c in pipeline):
                found.append(DocCommand(f"{path.relative_to(ROOT)}:{number}", tuple(pipeline)))
    return found


COMMANDS = doc_commands()
HELM_COMMANDS = [c for c in COMMANDS if c.pipeline[-1][0] == "helm"]
KUBECTL_COMMANDS = [c for c in COMMANDS if c.pipeline[-1][0] == "kubectl"]


def test_the_docs_have_the_commands_a_user_runs() -> None:
    assert len(HELM_COMMANDS) >= 3 and len(KUBECTL_COMMANDS) >= 5, [str(c) for c in COMMANDS]
    # The README's cluster walkthrough installs the chart with a builder image.
    assert any(c.where.startswith("README.md") and "install" in c.pipeline[-1] for c in HELM_COMMANDS)


def _set_values(flags: list[str]) -> list[tuple[str, str]]:
    pairs = []
    for flag, value in itertools.pairwise(flags):
        if flag in ("--set", "--set-string"):
            key, _, raw = value.partition("=")
            pairs.append((key, raw))
    return pairs


@needs_helm
@pytest.mark.parametrize("command", HELM_COMMANDS, ids=str)
def test_helm_commands_render_as_written(command: DocCommand) -> None:
    argv = list(command.pipeline[-1])
    assert argv[1] in ("install", "upgrade", "template"), f"{command}: unexpected helm subcommand"
    release, chart = argv[2], argv[3]
    assert (ROOT / chart).resolve() == CHART.resolve(), f"{command}: chart path {chart}"
    flags = [a for a in argv[4:] if a not in UPGRADE_ONLY_FLAGS]
    assert HELM is not None
    proc = subprocess.run(
        [HELM, "template", release, chart, *flags], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, f"{command}\n{proc.stderr}"
    docs = [d for d in yaml.safe_load_all(proc.stdout) if d]
    assert any(d["kind"] == "Deployment" for d in docs)
    for key, value in _set_values(flags):
        for item in value.strip("{}").split(","):
            assert item in proc.stdout, f"{command}: --set {key}={value} changed nothing in the manifests"


@functools.cache
def kubectl_help(path: tuple[str, ...]) -> str:
    """`kubectl PATH --help`; `("options",)` gives the global flags (`kubectl options`)."""
    argv = [*path] if path == ("options",) else [*path, "--help"]
    proc = subprocess.run([str(KUBECTL), *argv], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def kubectl_subcommands(path: tuple[str, ...]) -> set[str]:
    text = kubectl_help(path)
    if "Available Commands:" not in text:
        return set()
    section = text.split("Available Commands:", 1)[1].split("\n\n", 1)[0]
    return {line.split()[0] for line in section.splitlines() if line.strip()}


@functools.cache
def kubectl_flags(path: tuple[str, ...]) -> frozenset[str]:
    flags = set()
    for text in (kubectl_help(path), kubectl_help(("options",))):
        for short, long in re.findall(r"(?m)^\s+(?:-(\w), )?(--[\w-]+)", text):
            flags.add(long)
            if short:
                flags.add(f"-{short}")
    return frozenset(flags)


def _modelengine_crd() -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-m", "modelengine.cli", "crd"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    crd: dict[str, Any] = yaml.safe_load(proc.stdout)
    return crd


def _check_objects(path: Path, where: str) -> None:
    crd = yaml.safe_load((CHART / "crds" / "modelengine.io_modelengines.yaml").read_text())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for doc in yaml.safe_load_all(path.read_text()):
        if not doc:
            continue
        if doc["kind"] == "ModelEngine":
            jsonschema.validate(doc, schema)
        else:
            kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)


def _subcommand(words: list[str]) -> tuple[str, ...]:
    """The command path (`create secret generic`): positional words kubectl lists as commands."""
    previous, positional = "", []
    for word in words:
        if not word.startswith("-") and previous not in ("-n", "--namespace", "--context", "--kubeconfig"):
            positional.append(word)
        previous = word
    assert positional, f"no subcommand in kubectl {shlex.join(words)}"
    path: tuple[str, ...] = (positional[0],)
    for word in positional[1:]:
        if word not in kubectl_subcommands(path):
            break
        path = (*path, word)
    return path


@pytest.mark.skipif(not KUBECTL.exists(), reason="no kubectl: run scripts/get-helm.sh (puts it in .tools/)")
@pytest.mark.parametrize("command", KUBECTL_COMMANDS, ids=str)
def test_kubectl_commands_use_real_flags_and_files(command: DocCommand) -> None:
    words = list(command.pipeline[-1][1:])
    subcommand = _subcommand(words)
    known = kubectl_flags(subcommand)
    for word in words:
        if word.startswith("-") and word != "-":
            name = word.split("=", 1)[0]
            assert name in known, f"{command}: kubectl {' '.join(subcommand)} has no flag {name}"
    for flag, value in itertools.pairwise(words):
        if flag in ("-f", "--filename"):
            if value == "-":
                assert command.pipeline[0][:2] == ("modelengine", "crd"), f"{command}: stdin from what?"
                chart_crd = yaml.safe_load((CHART / "crds" / "modelengine.io_modelengines.yaml").read_text())
                assert _modelengine_crd() == chart_crd
                continue
            path = ROOT / value
            if "/" not in value and not path.exists():
                continue  # the user's own file (README's opening line)
            assert path.exists(), f"{command}: no file {value}"
            _check_objects(path, str(command))
