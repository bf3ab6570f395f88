"""Issue 12, class 5: every extra installs on a machine without CUDA headers.

The check: each extra's requirements (self-references such as `modelengine[builder]`
expanded, plus the base dependencies) are resolved by pip (`--dry-run --ignore-installed
--prefer-binary --report`): the whole dependency tree, transitive packages included, for
this interpreter and platform. A wheel installs without a compiler or headers. A package
that resolves to a source distribution is downloaded (`pip download --no-binary`) and
must hold no compiled sources (C, C++, CUDA, Cython): only those need a compiler and, for
pycuda and its kind, CUDA's headers. (tensorrt-rtx-cu13 is such a pure-Python sdist.)
Nothing is installed (sdist metadata is prepared without build isolation, which keeps it
fast); pip reads the indexes this machine is configured with. A negative
control runs the same check on pycuda, which must fail, so the check can fail at all.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"

# Packages on PyPI that install only by compiling against CUDA (or from NVIDIA's own index).
NEEDS_CUDA_TO_BUILD = {"pycuda", "cupy", "tensorrt", "nvidia-tensorrt"}
COMPILED_SOURCES = (".c", ".cc", ".cpp", ".cxx", ".cu", ".cuh", ".pyx")


def _project() -> dict[str, Any]:
    project: dict[str, Any] = tomllib.loads(PYPROJECT.read_text())["project"]
    return project


def expanded(extra: str) -> list[str]:
    """The base dependencies and the extra's requirements, self-references expanded."""
    project = _project()
    name = str(project["name"])
    extras: dict[str, list[str]] = project["optional-dependencies"]
    out: list[str] = list(project["dependencies"])
    pending, seen = [extra], set()
    while pending:
        current = pending.pop()
        if current in seen:
            continue
        seen.add(current)
        for line in extras[current]:
            req = Requirement(line)
            if req.name == name:
                pending.extend(req.extras)
            else:
                out.append(line)
    return sorted(set(out))


def _pip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pip", *args, "--quiet"], capture_output=True, text=True, timeout=540
    )


def _members(archive: Path) -> list[str]:
    if archive.suffix == ".zip":
        with zipfile.ZipFile(archive) as zf:
            return zf.namelist()
    with tarfile.open(archive) as tf:
        return tf.getnames()


def build_problems(requirements: list[str], work: Path) -> list[str]:
    """Why the requirements would not install without a compiler or CUDA headers ([] if they do)."""
    report = work / "report.json"
    proc = _pip(
        "install",
        "--dry-run",
        "--ignore-installed",
        "--prefer-binary",
        "--no-build-isolation",
        "--report",
        str(report),
        *requirements,
    )
    if proc.returncode != 0:
        return [line for line in proc.stderr.splitlines() if line.startswith("ERROR")] or [
            proc.stderr[-2000:]
        ]
    problems = []
    for item in json.loads(report.read_text())["install"]:
        if item["download_info"]["url"].endswith(".whl"):
            continue
        name, version = item["metadata"]["name"], item["metadata"]["version"]
        dest = work / name
        got = _pip("download", "--no-deps", "--no-binary=:all:", "-d", str(dest), f"{name}=={version}")
        archives = list(dest.iterdir()) if dest.is_dir() else []
        if got.returncode != 0 or not archives:
            problems.append(f"{name} {version}: source distribution not downloadable: {got.stderr[-300:]}")
            continue
        compiled = [m for m in _members(archives[0]) if m.endswith(COMPILED_SOURCES)]
        if compiled:
            problems.append(f"{name} {version} builds from source with compiled code: {compiled[:3]}")
    return problems


EXTRAS = sorted(_project()["optional-dependencies"])


def test_the_gpu_extra_is_cuda_python_alone() -> None:
    names = {Requirement(r).name for r in _project()["optional-dependencies"]["gpu"]}
    assert names == {"cuda-python"}


@pytest.mark.parametrize("extra", EXTRAS)
def test_no_extra_names_a_package_that_builds_against_cuda(extra: str) -> None:
    names = {Requirement(r).name.lower() for r in expanded(extra)}
    assert not names & NEEDS_CUDA_TO_BUILD, names & NEEDS_CUDA_TO_BUILD


@pytest.mark.slow
@pytest.mark.parametrize("extra", EXTRAS)
def test_every_extra_installs_without_compiling(extra: str, tmp_path: Path) -> None:
    assert build_problems(expanded(extra), tmp_path) == []


@pytest.mark.slow
def test_the_check_refuses_pycuda(tmp_path: Path) -> None:
    problems = build_problems(["pycuda>=2024.1"], tmp_path)
    assert problems and "pycuda" in problems[0], problems
