"""The layers import downward only: import-linter's contracts (pyproject.toml) hold.

scripts/test runs ``lint-imports`` too; this test makes ``pytest`` alone catch a new
upward import or cycle.
"""

import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent

pytest.importorskip("importlinter", reason="import-linter is not installed "
                    "(pip install -e '.[test]'): the layer contracts are not checked")


def test_import_contracts_are_kept():
    env = dict(os.environ)
    # this checkout's package, whatever threadnet an editable install points at
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT / "src")] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    proc = subprocess.run(
        [sys.executable, "-c",
         "from importlinter.cli import lint_imports_command; lint_imports_command()",
         "--no-cache"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
