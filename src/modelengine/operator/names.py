"""Names and label values the API server accepts, derived from any valid ModelEngine name.

A ModelEngine name may be a 253-character DNS subdomain; label values stop at 63
characters and must begin and end with an alphanumeric, and Service names are DNS-1035
labels (63 characters, starting with a letter). Cutting with `name[:63]` can end in `-` or
`.`, which the server refuses with a 422. Every derived name here is the whole input when
it already fits, and otherwise a readable prefix plus a hash of the whole input, so two
long names never collide and the result is a pure function of the input.
"""

from __future__ import annotations

import hashlib
import re

MAX_LABEL = 63
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_HASH_CHARS = 8


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:_HASH_CHARS]


def label_value(text: str) -> str:
    """`text` itself when it is a valid label value, else a valid, hash-suffixed stand-in."""
    if len(text) <= MAX_LABEL and _LABEL_VALUE.match(text):
        return text
    cleaned = re.sub(r"[^A-Za-z0-9_.-]", "-", text)
    prefix = cleaned[: MAX_LABEL - _HASH_CHARS - 1].strip("-_.")
    return f"{prefix}-{_digest(text)}" if prefix else _digest(text)


def dns_label(text: str, *, suffix: str = "") -> str:
    """A DNS-1035 label (Service, container names) ending in `suffix`, at most 63 characters."""
    base = re.sub(r"[^a-z0-9-]", "-", text.lower()).strip("-") or "me"
    if not base[0].isalpha():
        base = "me-" + base
    full = f"{base}{suffix}"
    if len(full) <= MAX_LABEL:
        return full
    room = MAX_LABEL - len(suffix) - _HASH_CHARS - 1
    return f"{base[:room].rstrip('-')}-{_digest(text)}{suffix}"
