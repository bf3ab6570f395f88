"""No 500 for any client input (Hypothesis over real HTTP): random and adversarial bodies,
`Inference-Header-Content-Length` values, paths and methods against a ready runtime get a
4xx (or 200) with a one-line JSON error, and nothing is logged at ERROR."""

from __future__ import annotations

import http.client
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelengine.runtime.accelerator import CPU_ONLY
from modelengine.runtime.server import ServerConfig
from modelengine.store.open import open_store

from ..security.test_properties import JSON, infer_requests
from .conftest import Engines
from .engines import publish, release, release_entry
from .harness import ServerThread


class _Errors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(scope="module")
def server(
    engines: Engines, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ServerThread, _Errors]]:
    root = tmp_path_factory.mktemp("http-properties")
    store = open_store((root / "store").as_uri())
    release(store, [release_entry(store, publish(store, engines.a.engine))])
    errors = _Errors()
    logging.getLogger().addHandler(errors)
    thread = ServerThread(
        ServerConfig(
            store_uri=store.uri, namespace="default", name="mlp", accelerator=CPU_ONLY,
            cache_dir=root / "cache", poll_seconds=0, max_request_mib=0.25,
        )
    )  # fmt: skip
    try:
        thread.wait_ready()
        yield thread, errors
    finally:
        thread.stop()
        logging.getLogger().removeHandler(errors)


def _mlp_inputs(body: bytes) -> bytes:
    """Point a generated request at the served model's input `x` half of the time."""
    try:
        doc = json.loads(body)
    except ValueError:
        return body
    if isinstance(doc, dict) and isinstance(doc.get("inputs"), list) and doc["inputs"]:
        first = doc["inputs"][0]
        if isinstance(first, dict):
            first["name"] = "x"
    return json.dumps(doc).encode()


PATHS = st.sampled_from(
    ["/v2/models/mlp/infer", "/v2/models/mlp/versions/1/infer", "/v2/models/mlp", "/v2/health/ready", "/v2",
     "/v2/models/%00/infer", "/v2/models/" + "a" * 3000 + "/infer", "/../../etc/passwd", "/v2/models/mlp/infer?x=1"]
)  # fmt: skip
METHODS = st.sampled_from(["POST", "GET", "PUT", "DELETE", "PATCH"])


@st.composite
def client_inputs(draw: st.DrawFn) -> tuple[str, str, bytes, dict[str, str]]:
    body, header_length = draw(infer_requests())
    if draw(st.booleans()) and header_length is None:
        body = _mlp_inputs(body)
    body = draw(st.one_of(st.just(body), st.binary(max_size=200), JSON.map(lambda d: json.dumps(d).encode())))
    headers = {
        "Content-Type": draw(st.sampled_from(["application/json", "application/octet-stream", "text/x"]))
    }
    if header_length is not None:
        headers["Inference-Header-Content-Length"] = "".join(c for c in header_length if " " < c <= "~")
    return draw(METHODS), draw(PATHS), body, headers


@settings(
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(request=client_inputs())
def test_no_client_input_gets_a_500_or_an_error_log(
    server: tuple[ServerThread, _Errors], request: tuple[str, str, bytes, dict[str, str]]
) -> None:
    thread, errors = server
    method, path, body, headers = request
    host, port = thread.hostport.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        status, raw = resp.status, resp.read()
    finally:
        conn.close()
    assert status < 500, (status, raw[:300])
    if status >= 400:
        doc: Any = json.loads(raw)
        assert isinstance(doc.get("error"), str) and "\n" not in doc["error"], doc
    assert not errors.records, [r.getMessage() for r in errors.records]
