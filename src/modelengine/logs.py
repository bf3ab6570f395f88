"""Structured, quiet-by-default logging shared by every command, and the one redaction
path for everything that leaves a process.

Default level is WARNING (quiet); `-v` gives INFO, `-vv` DEBUG, `-vvv` also third-party
debug output (botocore, urllib3). `--log-format json` prints one JSON object per line.

`redact` masks credentials in any text: userinfo in URLs (`http://KEY:SECRET@host`),
AWS access key ids (`AKIA...`, `ASIA...`, also inside `Credential=AKIA.../...`), STS
session tokens, `Authorization` headers in any form (header lines, dict reprs such as
botocore's request dumps, bytes values, JSON), and values of secret-named keys
(`secret`, `password`, `token`, `X-Amz-Security-Token`, `aws_secret_access_key`, ...).
Every output path calls it: both log formatters (the whole line, extras and tracebacks
included), the CLI's error line and `--debug` traceback, the runtime's HTTP bodies and
ready reasons, and the operator's status messages and Events.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from typing import Any

MASK = "***"

_SECRET_KEYS = (
    r"(?:aws_)?secret(?:_access)?(?:_key)?|secretaccesskey|(?:aws_)?session_?token|x-amz-security-token"
    r"|x-amz-credential|x-amz-signature|signature|password|passwd|pwd|api[_-]?key|token|access_token"
    r"|refresh_token|client_secret|private_key|aws_access_key_id|access_key(?:_id)?|accesskeyid"
)
_AUTH_KEYS = r"(?:proxy-)?authorization"

# Quantifiers that may fail after a long scan are bounded (a secret is never that long), so
# a hostile line costs linear time, not quadratic.
_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    # 'Authorization': b'AWS4-HMAC-SHA256 Credential=...'  /  "token": "..."  (quoted values)
    (
        re.compile(
            rf"""(?i)(?P<key>["']?\b(?:{_AUTH_KEYS}|{_SECRET_KEYS})["']?\s*[:=]\s*b?)"""
            r"""(?P<q>["'])(?:\\.|(?!(?P=q)).){0,8192}(?P=q)"""
        ),
        rf"\g<key>\g<q>{MASK}\g<q>",
    ),
    # Authorization: Bearer abc / Basic abc / AWS4-HMAC-SHA256 Credential=..., Signature=...
    (re.compile(rf"(?i)\b(?P<key>{_AUTH_KEYS})(?P<sep>\s*[:=]\s*)[^\r\n'\"}}]+"), rf"\g<key>\g<sep>{MASK}"),
    # secret=value, token: value (unquoted), query strings included
    (
        re.compile(rf"(?i)\b(?P<key>{_SECRET_KEYS})(?P<sep>\s*[:=]\s*)(?![\s'\"])[^\s&,;'\"}})\]]+"),
        rf"\g<key>\g<sep>{MASK}",
    ),
    # userinfo in URLs: scheme://user:password@host, scheme://token@host
    # (a password may hold a raw "/", as AWS secret keys do: accept it after the ":")
    (
        re.compile(
            r"(?i)(?P<scheme>\b[a-z][a-z0-9+.-]*://)(?:[^/@:\s'\"]{0,256}:[^@\s'\"]{0,1024}|[^/@:\s'\"]{1,1024})@"
        ),
        rf"\g<scheme>{MASK}@",
    ),
    # AWS access key ids anywhere (Credential=AKIA.../20261202/...)
    (re.compile(r"\b(?:AKIA|ASIA|AROA|AIDA|AGPA|ANPA|ANVA|AIPA)[A-Z0-9]{12,}\b"), MASK),
    # STS session tokens anywhere (they start with these base64 prefixes)
    (re.compile(r"\b(?:IQoJb3JpZ2lu|FwoGZXIvYXdz|FQoGZXIvYXdz)[A-Za-z0-9/+=]+"), MASK),
]


def redact(text: str) -> str:
    """`text` with every credential-looking substring masked (see the module doc)."""
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def redact_doc(doc: Any) -> Any:
    """A JSON-like document with every string in it redacted (keys kept)."""
    if isinstance(doc, str):
        return redact(doc)
    if isinstance(doc, dict):
        return {k: redact_doc(v) for k, v in doc.items()}
    if isinstance(doc, (list, tuple)):
        return [redact_doc(v) for v in doc]
    return doc


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        extra = getattr(record, "fields", None)
        if isinstance(extra, dict):
            doc.update({k: v for k, v in extra.items() if k not in doc})
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return redact(json.dumps(doc, default=str))


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        base = f"{record.levelname.lower():7} {record.name}: {record.getMessage()}"
        extra = getattr(record, "fields", None)
        if isinstance(extra, dict) and extra:
            base += " " + " ".join(f"{k}={v}" for k, v in extra.items())
        return redact(base)


def configure_logging(*, verbosity: int = 0, fmt: str = "text") -> None:
    level = logging.WARNING if verbosity <= 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonFormatter() if fmt == "json" else _TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Third-party libraries stay at WARNING unless -vv.
    for noisy in ("botocore", "boto3", "urllib3", "aiohttp.access", "kopf", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if verbosity >= 3 else logging.WARNING)
