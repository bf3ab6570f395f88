"""Errors of the serving path and the HTTP status each one maps to.

Handlers never build error responses themselves: whatever goes wrong is raised as one of
these (or as the backend's `InferenceInputError`), and `to_http` turns it into a status
code and a one-line reason for a KServe-style `{"error": "..."}` body. Anything else is an
internal error: logged with its traceback, answered with a 500 and its first line.
"""

from __future__ import annotations

from modelengine.backends.base import InferenceInputError
from modelengine.errors import first_line


class ServeError(Exception):
    """Base of the serving errors; `status` is the HTTP status it maps to."""

    status = 500


class BadRequest(ServeError):
    """The request is malformed or does not fit the model (400)."""

    status = 400


class ModelNotFound(ServeError):
    """No model (or version) of that name is served here (404)."""

    status = 404


class PayloadTooLarge(ServeError):
    """The body exceeds the configured request size limit (413)."""

    status = 413


class RequestTimeout(ServeError):
    """The client did not send its body in time (408); the connection is closed."""

    status = 408


class ClientGone(ServeError):
    """The client disconnected before its request was read (499, nginx's code): no one
    reads the answer, and it is logged at debug only, so disconnects cannot flood logs."""

    status = 499


class NotReady(ServeError):
    """No engine is loaded (yet), or the server is shutting down (503)."""

    status = 503


def to_http(err: BaseException) -> tuple[int, str]:
    """(status, one-line message) for an exception raised while serving a request."""
    if isinstance(err, ServeError):
        return err.status, first_line(err)
    if isinstance(err, InferenceInputError):
        return 400, first_line(err) if str(err).strip() else "invalid input"
    return 500, f"internal error: {first_line(err)}"
