"""The root of every error a user can act on, its exit code, and the one-line form.

Every refusal the project prints (CLI stderr, status messages, Events, HTTP bodies) is
one line with the root cause first. Modules raise their own subclasses; the CLI maps an
error to its exit code through `exit_code`, the same with and without `--debug`:

- 2 `InputError`: bad input the user can fix (spec, model, request, flags);
- 1 `BuildFailed`: the input was valid but the work failed (export, verification, build);
- 3 `InfrastructureError`: a store, network or cluster fault; a re-run may succeed.
"""

from __future__ import annotations

from datetime import UTC, datetime

EXIT_INPUT = 2
EXIT_FAILED = 1
EXIT_INFRASTRUCTURE = 3

_MAX_LINE = 300


class ModelEngineError(Exception):
    """Root of the user-facing errors; `exit_code` is what the CLI exits with."""

    exit_code = EXIT_FAILED


class InputError(ModelEngineError, ValueError):
    """Bad input: a spec, a model, a request or a flag the user can fix."""

    exit_code = EXIT_INPUT


class BuildFailed(ModelEngineError):
    """Valid input, failed work: export, verification, build or validation refused it."""

    exit_code = EXIT_FAILED


class InfrastructureError(ModelEngineError):
    """A store, network or cluster fault; nothing about the input was wrong."""

    exit_code = EXIT_INFRASTRUCTURE


def first_line(err: BaseException | str, *, limit: int = _MAX_LINE) -> str:
    """The first non-empty line of an error (or text), trimmed; never empty, never raises."""
    text = str(err)
    for line in text.splitlines():
        line = line.strip()
        if line:
            return line if len(line) <= limit else line[: limit - 3] + "..."
    return type(err).__name__ if isinstance(err, BaseException) else "unknown error"


def utc_now() -> str:
    """The current time as Kubernetes and the store documents write it (RFC 3339, seconds)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
