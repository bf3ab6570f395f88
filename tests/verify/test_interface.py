"""Verify builds only on what `modelengine.export` publishes, never on export's modules."""

from __future__ import annotations

import ast
from pathlib import Path

import modelengine.export

VERIFY = Path(__file__).resolve().parents[2] / "src" / "modelengine" / "verify"


def export_imports(path: Path) -> list[tuple[str, list[str]]]:
    """(module, names) for every `from modelengine.export... import names` in a file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("modelengine.export"):
            found.append((node.module, [alias.name for alias in node.names]))
        elif isinstance(node, ast.Import):
            found += [(a.name, []) for a in node.names if a.name.startswith("modelengine.export")]
    return found


def test_verify_imports_only_the_published_interface_of_export() -> None:
    seen = 0
    for path in sorted(VERIFY.glob("*.py")):
        for module, names in export_imports(path):
            seen += 1
            assert module == "modelengine.export", f"{path.name} imports {module}"
            unpublished = sorted(set(names) - set(modelengine.export.__all__))
            assert not unpublished, f"{path.name} imports {unpublished}, not in export's __all__"
    assert seen >= 4  # verifier, probes, compare, report: the rule is exercised


def test_every_published_name_exists() -> None:
    missing = [name for name in modelengine.export.__all__ if not hasattr(modelengine.export, name)]
    assert missing == []
