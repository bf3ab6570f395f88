"""Source records: a model's digest and exported ONNX, found without reading its bytes.

A model source in a cluster is `s3://bucket/key` (one object), `s3://bucket/prefix/` (a
folder: python code + weights) or `file:///abs/path` inside a custom builder image. Its
*identity* is what can be learnt cheaply and changes whenever the bytes may have:

- one object: URI + ETag + VersionId + size (one HEAD);
- a folder: URI + sha256 of the sorted (key, ETag, size) list of its objects (ListObjectsV2);
- a path inside an image: URI + the image reference (pin images by digest);

plus how the bytes are read (format, entrypoint) and the export recipe, since the record
also names the ONNX exported from them. The identity is hashed into the record's key
(`source-records/<sha256>.json`, see `layout.py`). The resolve step writes the record LAST,
after the ONNX and its export record are in the store, so a record's presence means both
exist. The operator reads only this small document: a model of any size costs it one
HEAD (or one listing) and one GET. Records are validated strictly; a record that does not
validate is reported as `InvalidSourceRecord` and the resolve step overwrites it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any, Final, Literal, Protocol
from urllib.parse import unquote, urlparse

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from modelengine.api.models import ModelEngineSpec
from modelengine.api.targets import export_recipe
from modelengine.errors import first_line, utc_now
from modelengine.store.base import NotFound, ObjectStore, StoreError
from modelengine.store.layout import model_key, model_prefix, source_record_key

SCHEMA_VERSION: Final = 1
_HEX64 = r"^[0-9a-f]{64}$"
_MODEL_FILE_KEY = r"^models/[0-9a-f]{64}/[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$"


class S3Reader(Protocol):
    """The two metadata calls an identity needs; a boto3 S3 client is one."""

    def head_object(self, *, Bucket: str, Key: str) -> Mapping[str, Any]: ...

    def list_objects_v2(self, *, Bucket: str, Prefix: str, StartAfter: str = ...) -> Mapping[str, Any]: ...


class InvalidSourceRecord(StoreError):
    """A record exists but does not validate (corrupt, foreign or from another identity)."""


class _Doc(BaseModel):
    # The store's convention (see manifest.py): snake_case, written by pydantic. Strict:
    # a record is read from a store anyone with write access may have written.
    model_config = ConfigDict(extra="forbid", strict=True)

    def to_wire(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


class ObjectIdentity(_Doc):
    """One source URI as it is now: enough to notice any change, no bytes read."""

    uri: str = Field(min_length=1)
    etag: str | None = None
    version_id: str | None = None
    size: int = Field(ge=0)
    objects: int = Field(ge=1)
    listing_sha256: str | None = Field(default=None, pattern=_HEX64)
    image: str | None = None


class SourceIdentity(_Doc):
    schema_version: Literal[1] = SCHEMA_VERSION
    source: ObjectIdentity
    weights: ObjectIdentity | None = None
    format: str
    entrypoint: str | None = None
    export: dict[str, Any]

    @property
    def key(self) -> str:
        """sha256 of the canonical JSON: the record's name in the store."""
        text = json.dumps(self.to_wire(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()


class SourceRecord(_Doc):
    schema_version: Literal[1] = SCHEMA_VERSION
    identity: str = Field(pattern=_HEX64)
    source_identity: SourceIdentity
    model_digest: str = Field(pattern=_HEX64)
    export_digest: str = Field(pattern=_HEX64)
    onnx_key: str = Field(pattern=_MODEL_FILE_KEY)
    export_record_key: str = Field(pattern=_MODEL_FILE_KEY)
    created: str = Field(default_factory=utc_now)

    @model_validator(mode="after")
    def _keys_under_the_export(self) -> SourceRecord:
        prefix = model_prefix(self.export_digest)
        if not (self.onnx_key.startswith(prefix) and self.export_record_key.startswith(prefix)):
            raise ValueError(f"onnx_key and export_record_key must be under {prefix}")
        return self


def make_source_record(
    identity: SourceIdentity, *, model_digest: str, export_digest: str, onnx_file: str, export_record: str
) -> SourceRecord:
    return SourceRecord(
        identity=identity.key,
        source_identity=identity,
        model_digest=model_digest,
        export_digest=export_digest,
        onnx_key=model_key(export_digest, onnx_file),
        export_record_key=model_key(export_digest, export_record),
    )


# -- identity -------------------------------------------------------------------------


def is_s3(uri: str) -> bool:
    return urlparse(uri).scheme == "s3"


def _split_s3(uri: str) -> tuple[str, str]:
    parsed = urlparse(uri)
    key = parsed.path.lstrip("/")
    if parsed.scheme != "s3" or not parsed.netloc or not key:
        raise StoreError(f"{uri} is not an s3://bucket/key or s3://bucket/prefix/ URI")
    return parsed.netloc, key


def _code(err: Exception) -> str:
    response: Mapping[str, Any] = getattr(err, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def object_identity(uri: str, *, client: S3Reader) -> ObjectIdentity:
    """HEAD one object, or list a folder prefix (a URI ending in `/`); never reads bytes."""
    bucket, key = _split_s3(uri)
    try:
        if key.endswith("/"):
            return _folder_identity(uri, bucket, key, client)
        head = client.head_object(Bucket=bucket, Key=key)
    except StoreError:
        raise
    except Exception as err:
        if _code(err) in ("404", "NoSuchKey", "NotFound"):
            raise NotFound(
                f"{uri} does not exist (a folder source is written with a trailing slash: {uri}/)"
            ) from None
        raise StoreError(f"cannot read the metadata of {uri}: {_code(err) or first_line(err)}") from None
    return ObjectIdentity(
        uri=uri,
        etag=str(head.get("ETag")) if head.get("ETag") else None,
        version_id=str(head["VersionId"]) if head.get("VersionId") else None,
        size=int(head.get("ContentLength", 0)),
        objects=1,
    )


def _folder_identity(uri: str, bucket: str, prefix: str, client: S3Reader) -> ObjectIdentity:
    entries: list[tuple[str, str, int]] = []
    after = ""
    while True:
        page = (
            client.list_objects_v2(Bucket=bucket, Prefix=prefix, StartAfter=after)
            if after
            else client.list_objects_v2(Bucket=bucket, Prefix=prefix)
        )
        contents = page.get("Contents", [])
        for obj in contents:
            entries.append((str(obj["Key"])[len(prefix) :], str(obj.get("ETag", "")), int(obj["Size"])))
        if not page.get("IsTruncated") or not contents:
            break
        after = str(contents[-1]["Key"])
    entries = [e for e in entries if e[0] and not e[0].endswith("/")]  # folder markers hold nothing
    if not entries:
        raise NotFound(f"{uri} holds no objects")
    entries.sort()
    listing = hashlib.sha256(json.dumps(entries, separators=(",", ":")).encode()).hexdigest()
    return ObjectIdentity(
        uri=uri, size=sum(e[2] for e in entries), objects=len(entries), listing_sha256=listing
    )


def _image_identity(uri: str, image: str) -> ObjectIdentity:
    return ObjectIdentity(uri=uri, size=0, objects=1, image=image)


def source_identity(spec: ModelEngineSpec, *, client: S3Reader | None) -> SourceIdentity | None:
    """The identity of the spec's model, or None when it has none a cluster could share:
    a local path outside a builder image (the local CLI hashes those directly)."""

    def one(uri: str) -> ObjectIdentity | None:
        if is_s3(uri):
            if client is None:
                raise StoreError(f"{uri}: no S3 client to read its metadata")
            return object_identity(uri, client=client)
        parsed = urlparse(uri)
        if parsed.scheme == "file" and unquote(parsed.path).startswith("/") and spec.build.image:
            return _image_identity(uri, spec.build.image)
        return None

    model = spec.model
    source = one(model.source)
    if source is None:
        return None
    weights = one(model.weights) if model.weights else None
    if model.weights and weights is None:
        return None
    return SourceIdentity(
        source=source,
        weights=weights,
        format=model.format.value,
        entrypoint=model.entrypoint,
        export=export_recipe(spec),
    )


# -- records --------------------------------------------------------------------------


def read_source_record(store: ObjectStore, identity: SourceIdentity) -> SourceRecord | None:
    """The record of this identity, None when there is none; InvalidSourceRecord when the
    stored document does not validate or belongs to another identity."""
    key = source_record_key(identity.key)
    try:
        raw = store.get_bytes(key)
    except NotFound:
        return None
    try:
        record = SourceRecord.model_validate_json(raw)
    except (ValueError, ValidationError) as err:
        raise InvalidSourceRecord(
            f"{store.url_for(key)} is not a valid source record: {first_line(err)}"
        ) from None
    if record.identity != identity.key or record.source_identity != identity:
        raise InvalidSourceRecord(f"{store.url_for(key)} records another source identity")
    return record


def write_source_record(store: ObjectStore, record: SourceRecord) -> str:
    """Write (or replace) the record; returns its URI. Call it after the ONNX is stored."""
    if record.identity != record.source_identity.key:
        raise ValueError("source record identity does not match its source identity")
    key = source_record_key(record.identity)
    store.put_bytes(key, json.dumps(record.to_wire(), indent=2).encode())
    return store.url_for(key)
