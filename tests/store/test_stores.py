"""file:// and s3:// (moto's server over HTTP) behind one interface, same behaviour."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from modelengine.store.base import NotFound, ObjectStore, StoreError
from modelengine.store.open import open_store, split_object_uri


@pytest.fixture(params=["file", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ObjectStore]:
    if request.param == "file":
        yield open_store((tmp_path / "store").as_uri())
    else:
        env: dict[str, Any] = request.getfixturevalue("s3_env")
        yield open_store(env["uri"], endpoint_url=env["endpoint_url"])


def test_roundtrip_bytes_and_files(store: ObjectStore, tmp_path: Path) -> None:
    store.put_bytes("a/b/c.json", b'{"x": 1}')
    assert store.exists("a/b/c.json")
    assert store.get_bytes("a/b/c.json") == b'{"x": 1}'
    assert store.size("a/b/c.json") == 8
    src = tmp_path / "blob.bin"
    src.write_bytes(bytes(range(256)) * 4000)
    store.put_file("engines/k/engine.plan", src)
    dest = tmp_path / "out" / "engine.plan"
    store.get_file("engines/k/engine.plan", dest)
    assert dest.read_bytes() == src.read_bytes()
    assert sorted(store.list("a/")) == ["a/b/c.json"]
    assert sorted(store.list("engines/")) == ["engines/k/engine.plan"]
    assert store.url_for("a/b/c.json").endswith("/a/b/c.json")
    store.delete("a/b/c.json")
    store.delete("a/b/c.json")  # deleting a missing key is fine
    assert not store.exists("a/b/c.json")


def test_missing_keys_raise_not_found(store: ObjectStore, tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="does not exist"):
        store.get_bytes("nope.json")
    with pytest.raises(NotFound):
        store.get_file("nope.bin", tmp_path / "x")
    assert not (tmp_path / "x").exists()
    assert list(store.list("nothing/")) == []


def test_unsupported_scheme_and_bad_keys(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="unsupported store URI scheme 'gs'"):
        open_store("gs://bucket/x")
    with pytest.raises(StoreError, match="no bucket"):
        open_store("s3:///x")
    store = open_store(tmp_path.as_uri())
    with pytest.raises(StoreError, match="invalid store key"):
        store.put_bytes("../escape", b"x")


def test_s3_errors_are_one_line_and_carry_no_credentials(s3_env: dict[str, Any]) -> None:
    store = open_store(f"s3://no-such-bucket-{s3_env['bucket']}/p", endpoint_url=s3_env["endpoint_url"])
    with pytest.raises(StoreError) as info:
        store.put_bytes("k", b"x")
    message = str(info.value)
    assert "NoSuchBucket" in message and "\n" not in message
    assert "testing-secret-key" not in message and "testing-key-id" not in message


def test_split_object_uri(tmp_path: Path, s3_env: dict[str, Any]) -> None:
    store, key = split_object_uri(
        f"{s3_env['uri']}/engines/k/manifest.json", endpoint_url=s3_env["endpoint_url"]
    )
    store.put_bytes(key, b"{}")
    assert open_store(s3_env["uri"], endpoint_url=s3_env["endpoint_url"]).exists("engines/k/manifest.json")


def test_file_store_objects_have_the_mode_a_plain_write_gives(tmp_path: Path) -> None:
    store = open_store((tmp_path / "store").as_uri())
    store.put_bytes("engines/k/manifest.json", b"{}")
    (tmp_path / "plain").write_bytes(b"{}")
    mode = (tmp_path / "store" / "engines" / "k" / "manifest.json").stat().st_mode & 0o777
    assert mode == (tmp_path / "plain").stat().st_mode & 0o777  # not mkstemp's 0600
