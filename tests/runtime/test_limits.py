"""Limits on what a client can make the runtime do (issue 12, class 3), over real HTTP:
oversized or absurd shapes are a 400 naming the input (never a 500, never an ERROR log),
stalled headers and bodies are dropped, and a client vanishing mid-body is a debug line."""

from __future__ import annotations

import json
import logging
import socket
import time
from collections.abc import Callable
from typing import Any

import pytest

from .conftest import Published
from .engines import release, release_entry
from .harness import ServerThread, http

GOOD = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 8], "data": [0.5] * 8}]}


def _body(**changes: Any) -> bytes:
    return json.dumps({"inputs": [GOOD["inputs"][0] | changes]}).encode()


def _binary(shape: list[int], size: int) -> tuple[bytes, dict[str, str]]:
    head = json.dumps(
        {
            "inputs": [
                {"name": "x", "datatype": "FP32", "shape": shape, "parameters": {"binary_data_size": size}}
            ]
        }
    ).encode()
    return head, {"Inference-Header-Content-Length": str(len(head))}


SHAPES: list[tuple[str, bytes, dict[str, str], str]] = [
    ("zero times 2**62", _body(shape=[0, 2**62], data=[]), {}, "dimension over 2147483647"),
    ("10,000 dimensions", _body(shape=[1] * 10_000, data=[0.5]), {}, "rank 10000 exceeds the limit of 16"),
    ("2**20 x 2**20", _body(shape=[2**20, 2**20], data=[]), {}, "needs 4398046511104 bytes, over the"),
    ("over the request limit", _body(shape=[2**24, 8], data=[]), {}, "(--max-request-mib)"),
    ("binary, huge shape", *_binary([2**30, 8], 2**35), "needs 34359738368 bytes"),
    ("data nested 500 deep", _body(data=json.loads("[" * 500 + "]" * 500)), {}, "input x"),
    (
        "JSON nested 100,000 deep",
        b'{"inputs": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        {},
        "malformed JSON",
    ),
]


@pytest.mark.parametrize(("what", "body", "headers", "reason"), SHAPES, ids=[s[0] for s in SHAPES])
def test_absurd_shapes_are_400_without_an_error_log(
    served: ServerThread,
    caplog: pytest.LogCaptureFixture,
    what: str,
    body: bytes,
    headers: dict[str, str],
    reason: str,
) -> None:
    with caplog.at_level(logging.DEBUG):
        status, doc = http(f"{served.url}/v2/models/mlp/infer", body, headers)
    assert status == 400, (what, doc)
    assert reason in doc["error"] and "\n" not in doc["error"], doc
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    assert http(f"{served.url}/v2/models/mlp/infer", json.dumps(GOOD).encode())[0] == 200


@pytest.fixture
def strict(published: Published, start: Callable[..., ServerThread]) -> ServerThread:
    release(published.store, [release_entry(published.store, published.a)])
    server = start(store_uri=published.uri, header_timeout=0.5, body_timeout=0.5)
    server.wait_ready()
    return server


def _connect(server: ServerThread) -> socket.socket:
    host, port = server.hostport.split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    return sock


def _read_all(sock: socket.socket, timeout: float) -> bytes:
    """Everything until the server closes the connection (fails if it does not in time)."""
    sock.settimeout(timeout)
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def test_stalled_headers_are_dropped_and_others_still_served(strict: ServerThread) -> None:
    stalled = [_connect(strict) for _ in range(200)]
    for sock in stalled:
        sock.sendall(b"POST /v2/models/mlp/infer HTTP/1.1\r\nHost: x\r\nContent-Le")
    start = time.monotonic()
    assert http(f"{strict.url}/v2/models/mlp/infer", json.dumps(GOOD).encode())[0] == 200
    for sock in stalled:
        assert _read_all(sock, timeout=10) == b""  # closed by the server, nothing answered
        sock.close()
    assert time.monotonic() - start < 8


def test_stalled_body_gets_408_and_the_connection_closes(
    strict: ServerThread, caplog: pytest.LogCaptureFixture
) -> None:
    sock = _connect(strict)
    body = json.dumps(GOOD).encode()
    with caplog.at_level(logging.DEBUG):
        sock.sendall(
            b"POST /v2/models/mlp/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body[:10]
        )
        answer = _read_all(sock, timeout=10)
    sock.close()
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"request body not received within 0.5s" in answer
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


def test_client_disconnecting_mid_body_is_a_debug_line(
    served: ServerThread, caplog: pytest.LogCaptureFixture
) -> None:
    body = json.dumps(GOOD).encode()
    with caplog.at_level(logging.DEBUG):
        for _ in range(20):
            sock = _connect(served)
            sock.sendall(
                b"POST /v2/models/mlp/infer HTTP/1.1\r\nHost: x\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body[:10]
            )
            time.sleep(0.02)
            sock.close()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and len(_gone(caplog.records)) < 20:
            time.sleep(0.05)
        assert http(f"{served.url}/v2/models/mlp/infer", body)[0] == 200
    assert len(_gone(caplog.records)) == 20, caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text


def _gone(records: list[logging.LogRecord]) -> list[logging.LogRecord]:
    return [r for r in records if r.levelno == logging.DEBUG and "disconnected mid-body" in r.getMessage()]
