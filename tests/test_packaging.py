"""The grammar ships inside the wheel: build it, install it into a fresh virtual environment, run `cnndsl check`."""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_wheel_installs_and_checks_a_spec(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(wheels),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    [wheel] = wheels.glob("cnndsl-*.whl")
    import zipfile

    names = set(zipfile.ZipFile(wheel).namelist())
    assert "cnndsl/grammars/cnn.lark" in names
    for init in (ROOT / "cnndsl").rglob("__init__.py"):
        assert str(init.relative_to(ROOT)) in names, f"{init} is not packaged (pyproject.toml packages)"

    env_dir = tmp_path / "fresh"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    # `check` needs only lark; the wheel's other requirements (torch among them) are not installed here.
    # Run from the empty temp folder with a clean environment: `python -m pip` puts its working directory on
    # sys.path, and a source tree there (with its editable install's egg-info) looks like cnndsl is installed.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--no-deps", "--force-reinstall", str(wheel), "lark"],
        check=True,
        capture_output=True,
        timeout=300,
        cwd=tmp_path,
        env=env,
    )
    assert (env_dir / "bin" / "cnndsl").exists(), "pip did not install the wheel's console script"
    spec = tmp_path / "tiny.cnn"
    spec.write_text("network Tiny(x: [3, 8, 8]) {\n  conv(4, 3) -> relu -> gap -> linear(2)\n}\n")
    result = subprocess.run(
        [str(env_dir / "bin" / "cnndsl"), "check", str(spec)],
        cwd=tmp_path,  # not the source tree: the installed package must carry its grammar
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "output output: [2]" in result.stdout
