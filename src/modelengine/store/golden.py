"""The golden-samples file: a few engine inputs with their ONNX reference outputs.

It lives beside the engine (`engines/<build-key>/golden.<sha12>.npz`) and the manifest's
`golden` field (`store.manifest.GoldenSamples`) names it with its sha256, the tolerance and
each sample's profile point and shapes; the manifest itself stays small.

Format: an uncompressed `.npz` (numpy's zip of `.npy` arrays), written with `np.savez` and
read with `allow_pickle=False`, so it can hold plain arrays only, never pickled objects.
Members are named by position, `s<i>_in<j>` and `s<i>_out<k>` in the manifest's input and
output order, so no tensor name (which may hold any character) becomes a zip path.

Reading is done as for every store document, as untrusted (`store.trust`): the bytes must
have the manifest's sha256 and size, every member must be stored uncompressed (so what is
decoded is no larger than what was downloaded), the member set must be exactly the expected
one, and each array must have the manifest's dtype and the sample's recorded shapes.
"""

from __future__ import annotations

import hashlib
import io
import math
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from modelengine.api.tensors import TensorInfo
from modelengine.errors import first_line
from modelengine.store.base import ObjectStore, StoreError
from modelengine.store.layout import engine_key
from modelengine.store.manifest import MAX_GOLDEN_BYTES, SAFE_SEGMENT, GoldenSampleInfo, GoldenSamples
from modelengine.store.trust import UntrustedDocument

GOLDEN_BASE_NAME = "golden.npz"
NUMERIC_KINDS = "biufc"


@dataclass(frozen=True)
class GoldenSample:
    label: str  # the profile point: min | opt | max | static
    inputs: dict[str, np.ndarray]
    outputs: dict[str, np.ndarray]


def _member(sample: int, side: str, index: int) -> str:
    return f"s{sample}_{side}{index}"


def encode_golden(
    samples: Sequence[GoldenSample], *, input_names: Sequence[str], output_names: Sequence[str]
) -> bytes:
    """The file's bytes (deterministic for the same arrays)."""
    arrays: dict[str, np.ndarray] = {}
    for i, sample in enumerate(samples):
        for j, name in enumerate(input_names):
            arrays[_member(i, "in", j)] = np.ascontiguousarray(sample.inputs[name])
        for k, name in enumerate(output_names):
            arrays[_member(i, "out", k)] = np.ascontiguousarray(sample.outputs[name])
    buffer = io.BytesIO()
    np.savez(buffer, allow_pickle=False, **arrays)
    return buffer.getvalue()


def sample_infos(samples: Sequence[GoldenSample], input_names: Sequence[str]) -> list[GoldenSampleInfo]:
    return [
        GoldenSampleInfo(label=s.label, shapes=[list(s.inputs[n].shape) for n in input_names])
        for s in samples
    ]


def decode_golden(
    raw: bytes,
    ref: GoldenSamples,
    *,
    inputs: Sequence[TensorInfo],
    outputs: Sequence[TensorInfo],
    where: str,
) -> list[GoldenSample]:
    """The samples of a golden file whose bytes were read from a store; `UntrustedDocument`
    naming the problem when it is not exactly what the manifest describes."""

    def refuse(problem: str) -> UntrustedDocument:
        return UntrustedDocument(f"{where} is refused: {problem}")

    if len(raw) != ref.size or len(raw) > MAX_GOLDEN_BYTES:
        raise refuse(f"{len(raw)} bytes, the manifest says {ref.size} (at most {MAX_GOLDEN_BYTES})")
    got = hashlib.sha256(raw).hexdigest()
    if got != ref.sha256:
        raise refuse(f"sha256 {got[:12]}…, the manifest says {ref.sha256[:12]}…")
    expected = {
        f"{_member(i, side, j)}.npy"
        for i in range(len(ref.samples))
        for side, tensors in (("in", inputs), ("out", outputs))
        for j in range(len(tensors))
    }
    try:
        with zipfile.ZipFile(io.BytesIO(raw)) as archive:
            members = archive.infolist()
            names = {m.filename for m in members}
            if names != expected or len(members) != len(expected):
                extra = sorted(names - expected)[:3]
                missing = sorted(expected - names)[:3]
                raise refuse(f"members differ from the manifest (unexpected {extra}, missing {missing})")
            arrays = {m.filename.removesuffix(".npy"): _read_member(archive, m) for m in members}
    except _Mismatch as err:
        raise refuse(str(err)) from None
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as err:
        raise refuse(first_line(err)) from None
    samples = []
    for i, info in enumerate(ref.samples):
        try:
            if len(info.shapes) != len(inputs):
                raise _Mismatch(f"{len(info.shapes)} shapes for {len(inputs)} inputs")
            feeds = _tensors(arrays, i, "in", inputs, info.shapes)
            answers = _tensors(arrays, i, "out", outputs, None)
        except _Mismatch as err:
            raise refuse(f"sample {i} ({info.label}): {err}") from None
        samples.append(GoldenSample(label=info.label, inputs=feeds, outputs=answers))
    return samples


class _Mismatch(ValueError):
    """An array that is not what the manifest describes."""


def _read_member(archive: zipfile.ZipFile, member: zipfile.ZipInfo) -> np.ndarray:
    """One `.npy` member, its header checked before anything is allocated: stored (not
    compressed), a plain dtype, and a shape whose bytes fit in the member."""
    if member.compress_type != zipfile.ZIP_STORED:
        raise _Mismatch(f"{member.filename} is compressed (only stored arrays are read)")
    with archive.open(member) as stream:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            shape, _fortran, dtype = np.lib.format.read_array_header_1_0(stream)
        elif version == (2, 0):
            shape, _fortran, dtype = np.lib.format.read_array_header_2_0(stream)
        else:
            raise _Mismatch(f"{member.filename}: .npy version {version} is not read")
        if dtype.hasobject or dtype.kind not in NUMERIC_KINDS:
            raise _Mismatch(f"{member.filename}: dtype {dtype} is not numeric")
        if math.prod(shape) * dtype.itemsize > member.file_size:
            raise _Mismatch(
                f"{member.filename}: shape {list(shape)} does not fit in {member.file_size} bytes"
            )
    with archive.open(member) as stream:
        return np.asarray(np.lib.format.read_array(stream, allow_pickle=False))


def _tensors(
    arrays: Mapping[str, np.ndarray],
    sample: int,
    side: str,
    tensors: Sequence[TensorInfo],
    shapes: list[list[int]] | None,
) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for j, tensor in enumerate(tensors):
        array = arrays[_member(sample, side, j)]
        what = f"{'input' if side == 'in' else 'output'} {tensor.name}"
        if array.dtype.kind not in NUMERIC_KINDS:
            raise _Mismatch(f"{what}: dtype {array.dtype} is not numeric")
        if side == "in" and array.dtype != _dtype(tensor.dtype):
            raise _Mismatch(f"{what}: dtype {array.dtype}, the manifest says {tensor.dtype}")
        if shapes is not None and list(array.shape) != shapes[j]:
            raise _Mismatch(f"{what}: shape {list(array.shape)}, the manifest says {shapes[j]}")
        out[tensor.name] = array
    return out


def _dtype(name: str) -> np.dtype[np.generic] | None:
    """The numpy dtype a manifest names, None for a name numpy does not know."""
    try:
        return np.dtype(name)
    except TypeError:
        return None


def golden_key(build_key: str, ref: GoldenSamples) -> str:
    if not SAFE_SEGMENT.fullmatch(ref.file):
        raise UntrustedDocument(f"golden file name {ref.file[:80]!r} is not a single file name")
    return engine_key(build_key, ref.file)


def read_golden(
    store: ObjectStore,
    build_key: str,
    ref: GoldenSamples,
    *,
    inputs: Sequence[TensorInfo],
    outputs: Sequence[TensorInfo],
) -> list[GoldenSample]:
    """Download and decode the golden samples a manifest names (sha256 checked)."""
    key = golden_key(build_key, ref)
    where = f"golden samples {store.url_for(key)}"
    try:
        raw = store.get_bytes(key)
    except StoreError as err:
        raise StoreError(f"cannot read {where}: {first_line(err)}") from None
    return decode_golden(raw, ref, inputs=inputs, outputs=outputs, where=where)
