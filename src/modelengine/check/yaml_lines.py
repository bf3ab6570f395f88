"""The line of a field in a ModelEngine YAML, for findings about the spec itself.

A problem names its field the way the spec's validation does (`spec.export.inputs[0].max`);
this walks the composed YAML node tree of the ModelEngine document along that path and
returns the line of the deepest key it reaches, so an annotation lands on the field, or
on its closest existing parent when the field is missing.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

_PART = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def field_line(path: Path, dotted: str) -> int | None:
    """1-based line of `dotted` in the file's ModelEngine document (None when unreadable)."""
    try:
        documents = list(yaml.compose_all(path.read_text()))
    except (OSError, yaml.YAMLError):
        return None
    document = next((d for d in documents if _is_modelengine(d)), documents[0] if documents else None)
    if document is None:
        return None
    node: yaml.Node = document
    line = node.start_mark.line + 1
    for name, index in _PART.findall(dotted):
        if name and isinstance(node, yaml.MappingNode):
            found = next((pair for pair in node.value if pair[0].value == name), None)
            if found is None:
                break
            line = found[0].start_mark.line + 1
            node = found[1]
        elif index and isinstance(node, yaml.SequenceNode) and int(index) < len(node.value):
            node = node.value[int(index)]
            line = node.start_mark.line + 1
        else:
            break
    return line


def _is_modelengine(node: yaml.Node) -> bool:
    return isinstance(node, yaml.MappingNode) and any(
        k.value == "kind" and getattr(v, "value", None) == "ModelEngine" for k, v in node.value
    )
