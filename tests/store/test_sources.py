"""Source identities and records against moto's S3 server; the S3 client factory's keys."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from modelengine.api.models import ModelEngineSpec
from modelengine.store.base import NotFound, StoreError
from modelengine.store.layout import source_record_key
from modelengine.store.open import fetch, open_store
from modelengine.store.s3 import s3_client
from modelengine.store.sources import (
    InvalidSourceRecord,
    make_source_record,
    object_identity,
    read_source_record,
    source_identity,
    write_source_record,
)

DIGEST_A = "a" * 64
DIGEST_B = "b" * 64


def spec(
    source: str, *, weights: str | None = None, image: str | None = None, opset: int = 18
) -> ModelEngineSpec:
    return ModelEngineSpec.model_validate(
        {
            "model": {"source": source, "format": "python", "entrypoint": "m:make", "weights": weights},
            "export": {"opset": opset, "inputs": [{"name": "x", "shape": [1, 4]}]},
            "build": {"image": image},
            "targets": [{"cpu": True}],
            "storage": {"uri": "s3://unused/store"},
        }
    )


@pytest.fixture
def client(s3_env: dict[str, Any]) -> Any:
    return s3_client(endpoint_url=s3_env["endpoint_url"])


def put(client: Any, bucket: str, key: str, body: bytes) -> None:
    client.put_object(Bucket=bucket, Key=key, Body=body)


def test_object_identity_changes_with_the_bytes_and_reads_none(client: Any, s3_env: dict[str, Any]) -> None:
    bucket = s3_env["bucket"]
    put(client, bucket, "m/model.pt", b"one")
    first = object_identity(f"s3://{bucket}/m/model.pt", client=client)
    assert (first.size, first.objects) == (3, 1) and first.etag
    assert object_identity(f"s3://{bucket}/m/model.pt", client=client) == first
    put(client, bucket, "m/model.pt", b"two")
    assert object_identity(f"s3://{bucket}/m/model.pt", client=client).etag != first.etag


def test_folder_identity_lists_every_object(client: Any, s3_env: dict[str, Any]) -> None:
    bucket = s3_env["bucket"]
    put(client, bucket, "f/m.py", b"code")
    put(client, bucket, "f/weights/w.safetensors", b"w" * 10)
    uri = f"s3://{bucket}/f/"
    first = object_identity(uri, client=client)
    assert (first.objects, first.size) == (2, 14) and first.listing_sha256
    put(client, bucket, "f/extra.py", b"x")
    second = object_identity(uri, client=client)
    assert second.objects == 3 and second.listing_sha256 != first.listing_sha256


def test_folder_listing_pages_through_truncated_results(client: Any, s3_env: dict[str, Any]) -> None:
    bucket = s3_env["bucket"]
    for i in range(1005):  # ListObjectsV2 returns at most 1,000 per page
        put(client, bucket, f"big/{i:05d}.bin", b"")
    assert object_identity(f"s3://{bucket}/big/", client=client).objects == 1005


def test_missing_sources_say_what_to_write(client: Any, s3_env: dict[str, Any]) -> None:
    bucket = s3_env["bucket"]
    put(client, bucket, "f/m.py", b"code")
    with pytest.raises(NotFound, match=rf"s3://{bucket}/f does not exist .*trailing slash: s3://{bucket}/f/"):
        object_identity(f"s3://{bucket}/f", client=client)
    with pytest.raises(NotFound, match="holds no objects"):
        object_identity(f"s3://{bucket}/empty/", client=client)
    with pytest.raises(StoreError, match="is not an s3://bucket/key"):
        object_identity(f"s3://{bucket}", client=client)


def test_source_identity_covers_weights_recipe_and_image(client: Any, s3_env: dict[str, Any]) -> None:
    bucket = s3_env["bucket"]
    put(client, bucket, "f/m.py", b"code")
    put(client, bucket, "w.safetensors", b"w")
    base = source_identity(spec(f"s3://{bucket}/f/"), client=client)
    assert base is not None
    with_weights = source_identity(
        spec(f"s3://{bucket}/f/", weights=f"s3://{bucket}/w.safetensors"), client=client
    )
    other_recipe = source_identity(spec(f"s3://{bucket}/f/", opset=17), client=client)
    keys = {base.key, with_weights.key if with_weights else "", other_recipe.key if other_recipe else ""}
    assert len(keys) == 3
    in_image = source_identity(spec("file:///models/m", image="reg/builder@sha256:" + "c" * 64), client=None)
    assert in_image is not None and in_image.source.image and in_image.source.size == 0
    # A local path outside an image has no identity a cluster could share.
    assert source_identity(spec("file:///home/me/m"), client=None) is None


def test_records_roundtrip_and_are_validated_strictly(
    client: Any, s3_env: dict[str, Any], tmp_path: Path
) -> None:
    bucket = s3_env["bucket"]
    put(client, bucket, "m.pt", b"model")
    identity = source_identity(spec(f"s3://{bucket}/m.pt"), client=client)
    assert identity is not None
    store = open_store(s3_env["uri"], endpoint_url=s3_env["endpoint_url"])
    assert read_source_record(store, identity) is None
    record = make_source_record(
        identity,
        model_digest=DIGEST_A,
        export_digest=DIGEST_B,
        onnx_file="model.onnx",
        export_record="export.json",
    )
    uri = write_source_record(store, record)
    assert uri == store.url_for(source_record_key(identity.key))
    read = read_source_record(store, identity)
    assert read == record and read.onnx_key == f"models/{DIGEST_B}/model.onnx"

    doc = json.loads(store.get_bytes(source_record_key(identity.key)))
    for field, bad in (
        ("model_digest", "A" * 64),
        ("onnx_key", "models/../x"),
        ("onnx_key", f"models/{DIGEST_A}/model.onnx"),
        ("unexpected", None),
    ):
        broken = dict(doc)
        if bad is None:
            broken["unexpected"] = 1
        else:
            broken[field] = bad
        store.put_bytes(source_record_key(identity.key), json.dumps(broken).encode())
        with pytest.raises(InvalidSourceRecord, match="is not a valid source record"):
            read_source_record(store, identity)
    # A record stored under this identity's key but naming another source is refused too.
    put(client, bucket, "m.pt", b"changed")
    changed = source_identity(spec(f"s3://{bucket}/m.pt"), client=client)
    assert changed is not None and changed.key != identity.key
    store.put_bytes(source_record_key(changed.key), json.dumps(doc).encode())
    with pytest.raises(InvalidSourceRecord, match="records another source identity"):
        read_source_record(store, changed)


def test_fetch_downloads_a_folder_prefix(client: Any, s3_env: dict[str, Any], tmp_path: Path) -> None:
    bucket = s3_env["bucket"]
    put(client, bucket, "f/m.py", b"code")
    put(client, bucket, "f/sub/w.bin", b"w")
    put(client, bucket, "f2/other.py", b"not mine")
    got = fetch(f"s3://{bucket}/f/", tmp_path / "model", endpoint_url=s3_env["endpoint_url"])
    files = sorted(p.relative_to(got).as_posix() for p in got.rglob("*") if p.is_file())
    assert files == ["m.py", "sub/w.bin"]
    assert (got / "m.py").read_bytes() == b"code"


def test_client_factory_reads_the_secret_keys(
    s3_env: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The keys a builder pod gets through envFrom, given as a mapping (what the operator
    reads from the Secret) or as the environment: the endpoint among them is honoured."""
    bucket = s3_env["bucket"]
    secret = {
        "AWS_ACCESS_KEY_ID": "testing-key-id",
        "AWS_SECRET_ACCESS_KEY": "testing-secret-key",
        "AWS_REGION": "eu-west-1",
        "AWS_ENDPOINT_URL": s3_env["endpoint_url"],
    }
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    from_secret = s3_client(credentials=secret)
    assert from_secret.meta.region_name == "eu-west-1"
    from_secret.put_object(Bucket=bucket, Key="k", Body=b"v")
    for name, value in secret.items():
        monkeypatch.setenv(name, value)
    from_env = s3_client()
    assert from_env.get_object(Bucket=bucket, Key="k")["Body"].read() == b"v"
    # AWS_ENDPOINT_URL_S3 is more specific than AWS_ENDPOINT_URL; the spec's endpoint wins over both.
    s3_only = s3_client(
        credentials={
            **secret,
            "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
            "AWS_ENDPOINT_URL_S3": s3_env["endpoint_url"],
        }
    )
    assert s3_only.meta.endpoint_url == s3_env["endpoint_url"]
    spec_wins = s3_client(
        endpoint_url=s3_env["endpoint_url"], credentials={**secret, "AWS_ENDPOINT_URL": "http://127.0.0.1:9"}
    )
    assert spec_wins.get_object(Bucket=bucket, Key="k")["Body"].read() == b"v"
    assert s3_client(region="us-west-2", credentials=secret).meta.region_name == "us-west-2"


class RecordingClient:
    """A real boto3 client that notes which S3 calls pass through it."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.calls: list[str] = []

    def head_object(self, *, Bucket: str, Key: str) -> Any:
        self.calls.append("head_object")
        return self._client.head_object(Bucket=Bucket, Key=Key)

    def list_objects_v2(self, *, Bucket: str, Prefix: str, StartAfter: str = "") -> Any:
        self.calls.append("list_objects_v2")
        kwargs = {"StartAfter": StartAfter} if StartAfter else {}
        return self._client.list_objects_v2(Bucket=Bucket, Prefix=Prefix, **kwargs)


def test_identity_costs_one_metadata_call_per_uri_whatever_the_size(
    client: Any, s3_env: dict[str, Any]
) -> None:
    bucket = s3_env["bucket"]
    put(client, bucket, "f/m.py", b"code")
    put(client, bucket, "f/w.safetensors", b"\0" * (8 << 20))
    put(client, bucket, "big.safetensors", b"\0" * (8 << 20))
    recording = RecordingClient(client)
    identity = source_identity(
        spec(f"s3://{bucket}/f/", weights=f"s3://{bucket}/big.safetensors"), client=recording
    )
    assert identity is not None and identity.source.size == 4 + (8 << 20)
    assert identity.weights is not None and identity.weights.size == 8 << 20
    assert recording.calls == ["list_objects_v2", "head_object"]
