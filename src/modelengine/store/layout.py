"""The store's content-addressed layout: one function per kind of key.

models/<export-digest>/model.onnx        (+ model.onnx.data for external weights)
engines/<build-key>/<engine file>        engine.plan / model.ort.onnx
engines/<build-key>/manifest.json        written LAST: its presence means complete
timing-caches/<backend>-<version>/<target>.cache
releases/<namespace>/<name>.json
source-records/<identity>.json           model digest + exported ONNX of one source identity
sources/<content-sha256>/...             model files uploaded by `modelengine push`
"""

from __future__ import annotations

MANIFEST_NAME = "manifest.json"


def model_prefix(export_digest: str) -> str:
    return f"models/{export_digest}/"


def model_key(export_digest: str, file_name: str = "model.onnx") -> str:
    return f"models/{export_digest}/{file_name}"


def engine_prefix(build_key: str) -> str:
    return f"engines/{build_key}/"


def engine_key(build_key: str, file_name: str) -> str:
    return f"engines/{build_key}/{file_name}"


def manifest_key(build_key: str) -> str:
    return f"engines/{build_key}/{MANIFEST_NAME}"


def timing_cache_key(backend: str, version: str, target: str) -> str:
    return f"timing-caches/{backend}-{version}/{target}.cache"


def release_key(namespace: str, name: str) -> str:
    return f"releases/{namespace}/{name}.json"


def source_record_key(identity: str) -> str:
    return f"source-records/{identity}.json"


def pushed_source_prefix(content_digest: str) -> str:
    return f"sources/{content_digest}/"
