"""The architecture's import rules, checked on the source: data flows one way."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "modelengine"

FORBIDDEN: dict[str, set[str]] = {
    "api": {
        "modelengine.store",
        "modelengine.export",
        "modelengine.verify",
        "modelengine.backends",
        "modelengine.builder",
        "modelengine.operator",
        "modelengine.runtime",
        "torch",
        "kopf",
    },
    "operator": {
        "modelengine.export",
        "modelengine.verify",
        "modelengine.backends",
        "modelengine.builder",
        "modelengine.runtime",
        "torch",
        "tensorrt",
        "tensorrt_rtx",
        "onnxruntime",
    },
    "runtime": {
        "torch",
        "modelengine.export",
        "modelengine.verify",
        "modelengine.builder",
        "modelengine.operator",
    },
    "store": {"modelengine.operator", "modelengine.runtime", "modelengine.builder", "kopf", "aiohttp"},
    "builder": {"modelengine.runtime", "modelengine.operator", "kopf", "aiohttp"},
    "backends": {"torch", "modelengine.operator", "modelengine.runtime", "modelengine.builder"},
    # check: load, export and verify only; no build, no engine store, no cluster.
    "check": {
        "modelengine.runtime",
        "modelengine.operator",
        "modelengine.builder",
        "modelengine.backends",
        "kopf",
        "aiohttp",
    },
}


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_respects_its_import_rules(package: str) -> None:
    violations = []
    for path in sorted((SRC / package).rglob("*.py")):
        for name in imports_of(path):
            for banned in FORBIDDEN[package]:
                if name == banned or name.startswith(banned + "."):
                    violations.append(f"{path.relative_to(SRC)} imports {name}")
    assert not violations, violations


def test_top_level_operator_folder_is_not_a_package() -> None:
    assert not (SRC.parents[1] / "operator" / "__init__.py").exists()
