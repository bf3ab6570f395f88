"""The pre-commit hook in examples/ci, run by pre-commit itself in a fresh git repository:
a model whose one-line conditional flips under tracing stops the commit with the line;
the fixed model (the gate written with torch.where, which the trace keeps) lets it pass."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.export.helpers import EXAMPLES, work_dir

MODEL = """
import torch
from torch import nn


class Gate(nn.Module):
    def forward(self, x):
        y = x - 0.25
        return {gate}


def make():
    return Gate()
"""
FROZEN = "torch.relu(y) if y.mean() > 0 else y * 3"
KEPT = "torch.where(y.mean() > 0, torch.relu(y), y * 3)"

SPEC = """
apiVersion: modelengine.io/v1alpha1
kind: ModelEngine
metadata:
  name: gate
spec:
  model:
    source: .
    format: python
    entrypoint: precommit_gate:make
  export:
    method: trace
    inputs:
      - name: input
        shape: [-1, 4]
        min: [1, 4]
        opt: [2, 4]
        max: [8, 4]
    outputs: [output]
    verify:
      samples: 4
  targets:
    - cpu: true
  storage:
    uri: file:///tmp/unused-store
"""


def pre_commit(repo: Path) -> subprocess.CompletedProcess[str]:
    binaries = Path(sys.executable).parent
    env = {
        **os.environ,
        "PATH": f"{binaries}{os.pathsep}{os.environ.get('PATH', '')}",
        "PRE_COMMIT_HOME": str(repo.parent / "pre-commit-home"),
        "PYTHONWARNINGS": "ignore",
    }
    return subprocess.run(
        [str(binaries / "pre-commit"), "run", "--all-files", "--color", "never"],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)


@pytest.mark.skipif(shutil.which("git") is None, reason="pre-commit needs git")
def test_the_hook_stops_a_commit_whose_branch_flips_and_passes_the_fix() -> None:
    repo = work_dir("pre-commit") / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    shutil.copy(EXAMPLES / "ci" / "pre-commit-config.yaml", repo / ".pre-commit-config.yaml")
    (repo / "modelengine.yaml").write_text(SPEC.lstrip())
    model = repo / "precommit_gate.py"
    model.write_text(textwrap.dedent(MODEL).format(gate=FROZEN))
    git(repo, "add", ".")

    stopped = pre_commit(repo)
    line = model.read_text().splitlines().index(f"        return {FROZEN}") + 1
    assert stopped.returncode == 1, stopped.stdout + stopped.stderr
    assert f"precommit_gate.py:{line}: error [frozen-branch-flips]" in stopped.stdout
    assert "takes `else` (the trace kept `then`)" in stopped.stdout

    model.write_text(textwrap.dedent(MODEL).format(gate=KEPT))
    git(repo, "add", ".")
    passed = pre_commit(repo)
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert re.search(
        r"^modelengine check \(export \+ verify, frozen branches\)\.+Passed$", passed.stdout, re.M
    )
