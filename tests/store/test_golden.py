"""The golden-samples file read as untrusted: only plain stored arrays that are exactly what
the manifest describes; and the manifest's `golden` field checked like every other field."""

from __future__ import annotations

import hashlib
import io
import json
import struct
import zipfile
from collections.abc import Callable

import numpy as np
import pytest

from modelengine.store.golden import GoldenSample, decode_golden, encode_golden, sample_infos
from modelengine.store.manifest import EngineManifest, EngineTarget, GoldenSamples, TensorInfo
from modelengine.store.trust import UntrustedDocument, parse_manifest

INPUTS = [TensorInfo(name="x", dtype="float32", shape=[-1, 3], min=[1, 3], opt=[2, 3], max=[4, 3])]
OUTPUTS = [TensorInfo(name="y", dtype="float32", shape=[-1, 2])]


def samples() -> list[GoldenSample]:
    rng = np.random.default_rng(0)
    return [
        GoldenSample(
            label, {"x": rng.standard_normal((n, 3)).astype(np.float32)}, {"y": rng.standard_normal((n, 2))}
        )
        for label, n in (("min", 1), ("opt", 2), ("max", 4))
    ]


def reference(raw: bytes, items: list[GoldenSample] | None = None) -> GoldenSamples:
    return GoldenSamples(
        file="golden.npz",
        sha256=hashlib.sha256(raw).hexdigest(),
        size=len(raw),
        rtol=1e-5,
        atol=1e-5,
        samples=sample_infos(items or samples(), ["x"]),
    )


def decode(raw: bytes, ref: GoldenSamples | None = None) -> list[GoldenSample]:
    return decode_golden(raw, ref or reference(raw), inputs=INPUTS, outputs=OUTPUTS, where="golden.npz")


def encoded(items: list[GoldenSample]) -> bytes:
    return encode_golden(items, input_names=["x"], output_names=["y"])


def test_round_trip_keeps_every_array_exactly() -> None:
    items = samples()
    got = decode(encoded(items))
    assert [s.label for s in got] == ["min", "opt", "max"]
    for want, have in zip(items, got, strict=True):
        assert np.array_equal(want.inputs["x"], have.inputs["x"]) and have.inputs["x"].dtype == np.float32
        assert np.array_equal(want.outputs["y"], have.outputs["y"])


def _zip(members: dict[str, bytes], compression: int = zipfile.ZIP_STORED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=True)
    return buffer.getvalue()


def _members(items: list[GoldenSample]) -> dict[str, bytes]:
    out = {}
    for i, s in enumerate(items):
        out[f"s{i}_in0.npy"] = _npy(s.inputs["x"])
        out[f"s{i}_out0.npy"] = _npy(s.outputs["y"])
    return out


def _lying_header(members: dict[str, bytes]) -> dict[str, bytes]:
    """s0_out0 claims 2^40 float64 elements but holds 16 bytes."""
    header = "{'descr': '<f8', 'fortran_order': False, 'shape': (1099511627776,), }".ljust(117) + "\n"
    members["s0_out0.npy"] = (
        b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + bytes(16)
    )
    return members


def _object_array(members: dict[str, bytes]) -> dict[str, bytes]:
    members["s0_out0.npy"] = _npy(np.array([{"a": 1}], dtype=object))
    return members


def _extra(members: dict[str, bytes]) -> dict[str, bytes]:
    members["evil.npy"] = _npy(np.zeros(1))
    return members


def _wrong_dtype(members: dict[str, bytes]) -> dict[str, bytes]:
    members["s1_in0.npy"] = _npy(np.zeros((2, 3), np.float64))
    return members


def _wrong_shape(members: dict[str, bytes]) -> dict[str, bytes]:
    members["s2_in0.npy"] = _npy(np.zeros((3, 3), np.float32))
    return members


@pytest.mark.parametrize(
    ("tamper", "compression", "problem"),
    [
        (_lying_header, zipfile.ZIP_STORED, "does not fit in"),
        (_object_array, zipfile.ZIP_STORED, "is not numeric"),
        (_extra, zipfile.ZIP_STORED, "unexpected ['evil.npy']"),
        (_wrong_dtype, zipfile.ZIP_STORED, "input x: dtype float64, the manifest says float32"),
        (_wrong_shape, zipfile.ZIP_STORED, "input x: shape [3, 3], the manifest says [4, 3]"),
        (lambda m: m, zipfile.ZIP_DEFLATED, "is compressed"),
    ],
    ids=["lying-header", "pickled-object", "extra-member", "input-dtype", "input-shape", "compressed"],
)
def test_a_file_that_is_not_what_the_manifest_describes_is_refused(
    tamper: Callable[[dict[str, bytes]], dict[str, bytes]], compression: int, problem: str
) -> None:
    raw = _zip(tamper(_members(samples())), compression)
    with pytest.raises(UntrustedDocument) as err:
        decode(raw)  # the manifest names these very bytes: only their content is wrong
    assert str(err.value).startswith("golden.npz is refused: ")
    assert problem in str(err.value)


def test_an_input_dtype_numpy_does_not_know_is_refused() -> None:
    raw = encoded(samples())
    odd = [INPUTS[0].model_copy(update={"dtype": "float33"})]
    with pytest.raises(UntrustedDocument, match="input x: dtype float32, the manifest says float33"):
        decode_golden(raw, reference(raw), inputs=odd, outputs=OUTPUTS, where="golden.npz")


def test_bytes_other_than_the_manifest_names_are_refused() -> None:
    raw = encoded(samples())
    ref = reference(raw)
    other = encoded(samples()[:2])
    with pytest.raises(UntrustedDocument, match="bytes, the manifest says"):
        decode(other, ref)
    flipped = raw[:-1] + bytes([raw[-1] ^ 1])
    with pytest.raises(UntrustedDocument, match=r"sha256 .*, the manifest says"):
        decode(flipped, ref)


def _manifest(golden: dict[str, object]) -> bytes:
    doc = EngineManifest(
        build_key="c" * 32,
        model_digest="a" * 64,
        onnx_digest="b" * 64,
        backend="onnxruntime",
        backend_version="1.20.0",
        target=EngineTarget(),
        precision="fp32",
        inputs=INPUTS,
        outputs=OUTPUTS,
        engine_file="model.ort.onnx",
        sha256="d" * 64,
        size=10,
        build_seconds=1.0,
        created="2026-12-02T00:00:00Z",
    ).model_dump(mode="json")
    doc["golden"] = golden
    return json.dumps(doc).encode()


GOOD = {
    "file": "golden.0123456789ab.npz",
    "sha256": "e" * 64,
    "size": 100,
    "rtol": 1e-5,
    "atol": 1e-5,
    "samples": [{"label": "min", "shapes": [[1, 3]]}],
}


@pytest.mark.parametrize(
    ("field", "value", "problem"),
    [
        ("file", "../golden.npz", "golden.file: not a single file name"),
        ("sha256", "x" * 64, "golden.sha256: not a sha256"),
        ("size", 2**40, "golden.size: size 1099511627776 is out of range"),
        ("atol", -1.0, "golden.atol: must be a finite, non-negative number"),
        ("samples", [], "golden.samples: 0 samples"),
        ("samples", [{"label": "min", "shapes": [[1, -3]]}], "golden.samples[0].shapes: shapes out of range"),
        ("samples", [{"label": "a/b", "shapes": [[1, 3]]}], "golden.samples[0].label: not a sample label"),
    ],
)
def test_the_manifest_field_is_checked_like_the_others(field: str, value: object, problem: str) -> None:
    assert parse_manifest(_manifest(GOOD), where="m").golden is not None
    with pytest.raises(UntrustedDocument) as err:
        parse_manifest(_manifest({**GOOD, field: value}), where="m")
    assert problem in str(err.value)
