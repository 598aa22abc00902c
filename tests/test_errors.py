"""Every broken spec in tests/errors/ gives exactly its golden diagnostics, exit code 1 and no traceback."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from cnndsl.cli import main

ROOT = Path(__file__).resolve().parent.parent
ERRORS = sorted(p for p in (ROOT / "tests" / "errors").glob("*.cnn") if not p.name.startswith("_"))
LOCATED = re.compile(r"^tests/errors/[\w.]+\.cnn:\d+:\d+: error: .+")


def test_there_are_at_least_forty_broken_specs() -> None:
    assert len(ERRORS) >= 40


@pytest.mark.parametrize("spec", ERRORS, ids=lambda p: p.stem)
def test_broken_spec_matches_golden(
    spec: Path,
    golden: Callable[[str, str], None],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(ROOT)
    code = main(["check", f"tests/errors/{spec.name}"])
    out = capsys.readouterr()
    assert code == 1
    assert out.out == ""
    assert "Traceback" not in out.err
    first = out.err.splitlines()[0]
    assert LOCATED.match(first), first
    golden(f"errors/{spec.stem}.txt", out.err)


@pytest.mark.parametrize("name", ["unknown_parameter", "syntax_missing_comma", "error_in_nested_block"])
def test_cli_subprocess_exit_code_and_no_traceback(name: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "cnndsl", "check", f"tests/errors/{name}.cnn"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith(f"tests/errors/{name}.cnn:")


def test_json_diagnostics(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    code = main(["check", "tests/errors/error_in_nested_block.cnn", "--format", "json"])
    assert code == 1
    [diagnostic] = json.loads(capsys.readouterr().out)
    assert diagnostic["line"] == 3
    assert diagnostic["column"] == 34
    assert diagnostic["message"] == "groups=3 does not divide the 16 input channels"
    assert [frame["call"] for frame in diagnostic["chain"]] == ["Unit(c=16, stride=2)", "Stage(c=16, n=2)"]
    assert diagnostic["source_line"].strip().startswith("conv(c, 3, padding=1, groups=3)")


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["check", str(tmp_path / "missing.cnn")]) == 2
    assert "cannot read" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["check"])
    assert exit_info.value.code == 2
