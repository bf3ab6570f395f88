"""Issue 12, class 4: no credential leaves a process, at any verbosity.

Planted values (an access key id, a secret, a session token, credentials inside an endpoint
URL) are given to real `modelengine` processes at -vvv, against moto's S3 server (botocore
then dumps signed request headers at debug) and against an endpoint URL carrying
`KEY:SECRET@`; every stream, HTTP body and file they leave behind is then searched."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from modelengine.logs import redact

from .process import ServeProcess

KEY = "AKIAPLANTEDKEYID0001"
SECRET = "plAnted/Secret+Value0123456789abcdefghij"
TOKEN = "IQoJb3JpZ2luX2VjEPlantedSessionToken0123456789"
URL_KEY = "AKIAPLANTEDURLKEY001"
URL_SECRET = "urlPlanted/Secret+xyz"
PLANTED = (KEY, SECRET, TOKEN, URL_KEY, URL_SECRET, "PlantedSessionToken", "plAnted", "urlPlanted")
ENV = {"AWS_ACCESS_KEY_ID": KEY, "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_SESSION_TOKEN": TOKEN}
BAD_ENDPOINT = f"http://{URL_KEY}:{URL_SECRET}@127.0.0.1:9"


@pytest.mark.parametrize(
    "text",
    [
        f'Could not connect to the endpoint URL: "http://{URL_KEY}:{URL_SECRET}@127.0.0.1:9/b/k"',
        f"headers={{'X-Amz-Security-Token': b'{TOKEN}', 'Authorization': b'AWS4-HMAC-SHA256 "
        f"Credential={KEY}/20261202/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=ab12'}}",
        f"Authorization: Bearer {SECRET}",
        f"authorization=Basic {SECRET}",
        f'{{"aws_secret_access_key": "{SECRET}", "aws_session_token": "{TOKEN}"}}',
        f"https://b.s3.amazonaws.com/k?X-Amz-Credential={KEY}%2F2026&X-Amz-Security-Token={TOKEN}",
        f"password: {SECRET}",
        f"the key {KEY} and the token {TOKEN} in prose",
    ],
)
def test_redact_masks_every_form(text: str) -> None:
    out = redact(text)
    assert not any(value in out for value in PLANTED), out
    assert "***" in out


def test_redact_keeps_what_is_not_a_secret() -> None:
    text = "s3://bucket/prefix/engines/0123abcd/model.ort.onnx: 3 tokens, key=engines/x"
    assert redact(text) == text


@pytest.mark.parametrize("line", ["a://b:" * 80_000, "token: '" * 60_000, "x://" * 120_000])
def test_redact_stays_linear_on_hostile_lines(line: str) -> None:
    """Unclosed quotes and URLs without `@` once made it quadratic (120 KB took 10 s)."""
    import time

    start = time.perf_counter()
    redact(line)
    assert time.perf_counter() - start < 5


def _leaks(texts: dict[str, str]) -> list[str]:
    return [f"{where}: {value}" for where, text in texts.items() for value in PLANTED if value in text]


def _files(root: Path) -> dict[str, str]:
    return {str(p): p.read_text(errors="replace") for p in root.rglob("*") if p.is_file()}


def _post(url: str) -> str:
    req = urllib.request.Request(url, data=b'{"inputs": []}', method="POST")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return str(resp.read().decode())
    except urllib.error.HTTPError as err:
        return str(err.read().decode())


def _exercise(serve: ServeProcess, reason: str) -> dict[str, str]:
    """Wait for the not-ready reason, then collect every HTTP answer a client can get."""
    doc = serve.wait_for("/v2/health/ready", lambda status, d: status == 503 and reason in str(d))
    bodies = {"ready": json.dumps(doc), "infer": _post(serve.url + "/v2/models/mlp/infer")}
    with urllib.request.urlopen(f"http://127.0.0.1:{serve.metrics_port}/metrics", timeout=10) as resp:
        bodies["metrics"] = resp.read().decode()
    bodies["model"] = json.dumps(serve.get("/v2/models/mlp"))
    return bodies


def test_serve_at_vvv_against_s3_leaks_nothing(s3_env: dict[str, str], tmp_path: Path) -> None:
    serve = ServeProcess(
        "--store", s3_env["uri"], "--s3-endpoint", s3_env["endpoint_url"], "--namespace", "default",
        "--name", "mlp", "--cache-dir", str(tmp_path / "cache"), "--poll-seconds", "0.2",
        cwd=tmp_path, verbosity=3, env=ENV,
    )  # fmt: skip
    try:
        bodies = _exercise(serve, "does not exist")
    finally:
        serve.stop()
    stderr = serve.stderr_path.read_text()
    assert "X-Amz-Security-Token" in stderr and "Authorization" in stderr, "botocore's header dump not seen"
    assert not _leaks(bodies | _files(tmp_path)), _leaks(bodies | _files(tmp_path))


def test_serve_with_credentials_in_the_endpoint_url_leaks_nothing(tmp_path: Path) -> None:
    serve = ServeProcess(
        "--store", "s3://bucket/store", "--s3-endpoint", BAD_ENDPOINT, "--namespace", "default",
        "--name", "mlp", "--cache-dir", str(tmp_path / "cache"), cwd=tmp_path, verbosity=3, env=ENV,
    )  # fmt: skip
    try:
        bodies = _exercise(serve, "was not a valid URI")
    finally:
        serve.stop()
    assert "http://***@127.0.0.1:9" in bodies["ready"] and "http://***@127.0.0.1:9" in bodies["infer"], bodies
    assert not _leaks(bodies | _files(tmp_path)), _leaks(bodies | _files(tmp_path))


@pytest.mark.parametrize("debug", [[], ["--debug"]])
def test_cli_error_line_and_debug_traceback_leak_nothing(tmp_path: Path, debug: list[str]) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "modelengine.cli", "-vvv", *debug, "inspect",
         "s3://bucket/engines/x/manifest.json", "--s3-endpoint", BAD_ENDPOINT],
        capture_output=True, text=True, timeout=120, cwd=tmp_path, env=_env(),
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("modelengine inspect: error: ") and "http://***@127.0.0.1:9" in last
    assert ("Traceback" in proc.stderr) == bool(debug)
    assert not _leaks({"stdout": proc.stdout, "stderr": proc.stderr} | _files(tmp_path))


def _env() -> dict[str, str]:
    import os

    return dict(os.environ, **ENV)


def test_build_at_vvv_against_s3_leaks_nothing(s3_env: dict[str, str], tmp_path: Path) -> None:
    """The builder's side: uploads to moto at -vvv (signed PUTs dumped by botocore)."""
    from tests.store.test_faults import _tiny_onnx_spec

    spec = _tiny_onnx_spec(tmp_path, tmp_path / "unused")
    proc = subprocess.run(
        [sys.executable, "-m", "modelengine.cli", "-vvv", "build", "-f", str(spec), "--store", s3_env["uri"],
         "--s3-endpoint", s3_env["endpoint_url"]],
        capture_output=True, text=True, timeout=300, cwd=tmp_path, env=_env(),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "X-Amz-Security-Token" in proc.stderr and "PutObject" in proc.stderr
    texts = {"stdout": proc.stdout, "stderr": proc.stderr} | _files(tmp_path)
    assert not _leaks(texts), _leaks(texts)
