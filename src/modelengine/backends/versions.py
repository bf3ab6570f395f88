"""Installed backend versions without importing the libraries (re-exported for backends).

The single implementation lives in `modelengine.api.versions` (the operator, which must
not import `backends/`, computes build keys with it). Every backend's `version()`
returns exactly what `installed_version` reads from package metadata, so keys computed
with and without the library agree; the tests check that for each installed backend.
"""

from __future__ import annotations

from modelengine.api.versions import DISTRIBUTIONS, installed_version

__all__ = ["DISTRIBUTIONS", "installed_version"]
