"""Backend versions: `version()` agrees with the metadata read that needs no import."""

from __future__ import annotations

import pytest

from modelengine.api.models import BackendName
from modelengine.backends.base import BackendUnavailable
from modelengine.backends.registry import get_backend
from modelengine.backends.versions import installed_version


@pytest.mark.parametrize("name", list(BackendName))
def test_version_agrees_with_installed_version(name: BackendName) -> None:
    expected = installed_version(name)
    backend = get_backend(name)
    if expected is None:
        with pytest.raises(BackendUnavailable):
            backend.version()
    else:
        assert backend.version() == expected


def test_installed_version_does_not_import_the_library() -> None:
    import subprocess
    import sys

    code = (
        "import sys; from modelengine.backends.versions import installed_version;"
        "v = installed_version('tensorrt-rtx'); print(v, 'tensorrt_rtx' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert out[1] == "False"
    assert out[0] == str(installed_version(BackendName.TENSORRT_RTX))
