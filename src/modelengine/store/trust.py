"""The trust boundary: documents read from a store, and local paths derived from them.

Whoever can write to a store can write any document in it, and builder Jobs, which run
user model code, hold write credentials. So no reader trusts a document's fields:

- every manifest and release record read from a store is parsed here, with the models'
  `UNTRUSTED` checks on (hex keys and digests, single-segment file names, bounded sizes
  and shapes), and a failure is an `UntrustedDocument` naming the field;
- an engine URI in a release record must name `engines/<its build key>/<file name>`; the
  bytes are always read from the store the record came from (a copied or mirrored store
  keeps working, since keys are content addresses), never from the host the URI names;
- every local path built from a document field goes through `confine`, which resolves it
  and refuses anything outside its root (a second line of defence behind the checks).
"""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from modelengine.errors import first_line
from modelengine.store.base import StoreError
from modelengine.store.layout import MANIFEST_NAME
from modelengine.store.manifest import (
    BUILD_KEY,
    SAFE_SEGMENT,
    UNTRUSTED,
    EngineManifest,
    ReleaseRecord,
)

MAX_DOCUMENT_BYTES = 4 * 2**20

Doc = TypeVar("Doc", bound=BaseModel)


class UntrustedDocument(StoreError):
    """A store document failed the trust checks; the message names the field."""


class UnsafePath(StoreError):
    """A path derived from a store document would leave its root."""


def field_problem(err: ValidationError) -> str:
    """`engines[0].build_key: not a build key ...` for the first problem pydantic found."""
    first = err.errors()[0] if err.errors() else None
    if first is None:
        return first_line(err)
    where = ""
    for part in first["loc"]:
        where += f"[{part}]" if isinstance(part, int) else ("." if where else "") + str(part)
    message = str(first["msg"]).removeprefix("Value error, ")
    return f"{where or 'document'}: {first_line(message)}"


def parse_document(model: type[Doc], raw: bytes, *, where: str) -> Doc:
    """Parse one untrusted JSON document; `where` names it in the error (a URI or key)."""
    if len(raw) > MAX_DOCUMENT_BYTES:
        raise UntrustedDocument(f"{where} is refused: {len(raw)} bytes exceed {MAX_DOCUMENT_BYTES}")
    try:
        return model.model_validate_json(raw, context=UNTRUSTED)
    except ValidationError as err:
        raise UntrustedDocument(f"{where} is refused: {field_problem(err)}") from None
    except (ValueError, RecursionError) as err:  # invalid UTF-8, nesting too deep
        raise UntrustedDocument(f"{where} is refused: {first_line(err)}") from None


def parse_manifest(raw: bytes, *, where: str, build_key: str | None = None) -> EngineManifest:
    """An engine manifest; with `build_key`, it must also be the manifest of that key."""
    manifest = parse_document(EngineManifest, raw, where=where)
    if build_key is not None and manifest.build_key != build_key:
        raise UntrustedDocument(
            f"{where} is refused: build_key {manifest.build_key} is not the key it is stored under"
        )
    return manifest


def parse_release(raw: bytes, *, where: str) -> ReleaseRecord:
    """A release record, with each engine's URIs checked to name its own build key."""
    record = parse_document(ReleaseRecord, raw, where=where)
    for i, engine in enumerate(record.engines):
        for field, uri, fixed in (
            ("uri", engine.uri, None),
            ("manifest_uri", engine.manifest_uri, MANIFEST_NAME),
        ):
            try:
                engine_object_key(uri, engine.build_key, file_name=fixed)
            except UntrustedDocument as err:
                raise UntrustedDocument(f"{where} is refused: engines[{i}].{field}: {err}") from None
    return record


def engine_object_key(uri: str, build_key: str, *, file_name: str | None = None) -> str:
    """The store key `engines/<build_key>/<name>` an engine URI names, or `UntrustedDocument`.

    Only the last three segments matter: the object is read from the store the document
    came from, whatever scheme and host the URI carries.
    """
    if not BUILD_KEY.fullmatch(build_key):
        raise UntrustedDocument(f"build key {build_key[:80]!r} is not 32 to 64 hex digits")
    parts = uri.rstrip("/").rsplit("/", 3)
    if len(parts) < 4 or parts[1] != "engines":
        raise UntrustedDocument(f"{uri[:120]!r} does not name engines/<build key>/<file>")
    _, _, key_part, name = parts
    if key_part != build_key:
        raise UntrustedDocument(f"{uri[:120]!r} is not under engines/{build_key[:64]}/")
    if not SAFE_SEGMENT.fullmatch(name) or (file_name is not None and name != file_name):
        expected = file_name or "a single file name"
        raise UntrustedDocument(f"{uri[:120]!r} does not end in {expected}")
    return f"engines/{build_key}/{name}"


def confine(root: Path, *parts: str) -> Path:
    """`root / parts...`, resolved, refused with `UnsafePath` unless it stays inside `root`."""
    base = root.resolve()
    path = base.joinpath(*parts).resolve()
    if path == base or not path.is_relative_to(base):
        shown = "/".join(p[:80] for p in parts)
        raise UnsafePath(f"path {shown!r} from a store document leaves {base}")
    return path
