"""The command line imports only the chosen subcommand: `operator` and `serve` start
without the build pipeline's imports, and parse exactly as the full parser does."""

from __future__ import annotations

import subprocess
import sys

import pytest

from modelengine.cli import build_parser

PROBE = """
import sys
from modelengine.cli import build_parser
build_parser({argv!r}).parse_args({argv!r})
print(sorted(m for m in ("modelengine.builder.pipeline", "numpy", "torch", "kopf") if m in sys.modules))
"""


@pytest.mark.parametrize(
    ("argv", "imported"),
    [
        (["operator", "--max-builds", "3"], []),  # kopf and the client: imported when it runs
        (["-v", "--log-format", "json", "crd"], []),
    ],
)
def test_only_the_chosen_command_is_imported(argv: list[str], imported: list[str]) -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROBE.format(argv=argv)], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == repr(imported)


def test_the_narrow_parser_reads_arguments_as_the_full_one() -> None:
    argv = ["-v", "operator", "-n", "team-a", "--max-builds", "3", "--builder-image", "b:1"]
    assert vars(build_parser(argv).parse_args(argv)) == vars(build_parser().parse_args(argv))


def test_an_unknown_command_is_refused_with_the_list_of_commands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser(["bogus"]).parse_args(["bogus"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'bogus'" in err and "'operator'" in err and "'build'" in err
