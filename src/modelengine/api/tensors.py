"""`TensorInfo`: one model input or output as every stage after the spec sees it.

Design: export reports the ONNX graph's tensors with it, backends build profiles from it
and report an engine's tensors with it, the store's documents (manifest, export record,
release record) carry it, and the runtime serves its metadata. It lives in `api/`, the
leaf all of them import, so none of them imports another for a shape.

Built in-process, a `TensorInfo` checks types only. Parsed from a document that came from
outside the process (a store: see `store.trust`), it is validated with the `UNTRUSTED`
context, which turns on its bounds: name length, dtype spelling, rank, dimensions and,
for profile shapes, the element count. The context is defined here, once, because every
document that carries a tensor uses it; so are `when_untrusted` and `matching`, which make
an `Annotated` field check apply under it only (the store's documents build theirs on them).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationInfo, field_validator

# Validation context for documents read from outside the process (a store).
UNTRUSTED: dict[str, Any] = {"untrusted": True}

DTYPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}")  # numpy dtype names
MAX_RANK = 16
MAX_DIM = 2**31 - 1
MAX_TENSOR_NAME = 256

T = TypeVar("T")


def untrusted(info: ValidationInfo) -> bool:
    """Whether this validation parses a document read from outside the process."""
    return bool(isinstance(info.context, dict) and info.context.get("untrusted"))


def when_untrusted(check: Callable[[T], object]) -> AfterValidator:
    """A field check for `Annotated[...]` that runs only under the `UNTRUSTED` context;
    `check` raises `ValueError` (its message is the refusal's) and its result is ignored."""

    def validate(value: T, info: ValidationInfo) -> T:
        if untrusted(info):
            check(value)
        return value

    return AfterValidator(validate)


def full_match(pattern: re.Pattern[str], what: str) -> Callable[[str], None]:
    """A check that the whole value matches `pattern`: else `not <what>: '<value>'`."""

    def check(value: str) -> None:
        if not pattern.fullmatch(value):
            raise ValueError(f"not {what}: {value[:80]!r}")

    return check


def matching(pattern: re.Pattern[str], what: str) -> AfterValidator:
    """`full_match`, on untrusted documents only."""
    return when_untrusted(full_match(pattern, what))


DTypeName = Annotated[str, matching(DTYPE, "a dtype name")]


class TensorInfo(BaseModel):
    """One engine input or output; for inputs `min/opt/max` give the profile (static: equal)."""

    model_config = ConfigDict(extra="ignore")

    name: str
    dtype: DTypeName  # numpy dtype name: float32, float16, int64, ...
    shape: list[int]  # -1 for dynamic dimensions
    min: list[int] | None = None
    opt: list[int] | None = None
    max: list[int] | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, value: str, info: ValidationInfo) -> str:
        if untrusted(info):
            if not 0 < len(value) <= MAX_TENSOR_NAME:
                raise ValueError(f"tensor name length {len(value)} is out of range [1, {MAX_TENSOR_NAME}]")
            if any(ord(c) < 32 for c in value):
                raise ValueError("tensor name holds control characters")
        return value

    @field_validator("shape")
    @classmethod
    def _shape(cls, value: list[int], info: ValidationInfo) -> list[int]:
        if untrusted(info):
            check_dims(value, dynamic=True)
        return value

    @field_validator("min", "opt", "max")
    @classmethod
    def _profile(cls, value: list[int] | None, info: ValidationInfo) -> list[int] | None:
        if value is not None and untrusted(info):
            check_dims(value, dynamic=False)
            shape = info.data.get("shape")
            if shape is not None and len(value) != len(shape):
                raise ValueError(f"profile rank {len(value)} differs from the shape's {len(shape)}")
        return value


def check_dims(dims: list[int], *, dynamic: bool) -> None:
    """Bounds of one shape: rank, each dimension (-1 allowed when dynamic), element count."""
    if len(dims) > MAX_RANK:
        raise ValueError(f"rank {len(dims)} exceeds {MAX_RANK}")
    low = -1 if dynamic else 0
    for d in dims:
        if not low <= d <= MAX_DIM:
            raise ValueError(f"dimension {d} is out of range [{low}, {MAX_DIM}]")
    if not dynamic and math.prod(dims) > MAX_DIM:
        raise ValueError(f"{math.prod(dims)} elements exceed {MAX_DIM}")
