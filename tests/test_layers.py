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


def test_every_module_is_in_a_layer():
    """A module the layers contract does not name is unconstrained: it could import
    upward unnoticed. Every module of the package (or a package that holds it) is named."""
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    named = set()
    for contract in config["tool"]["importlinter"]["contracts"]:
        if contract["id"] == "layers":
            for layer in contract["layers"]:
                named.update(m.strip() for m in layer.replace("|", ":").split(":"))
    src = ROOT / "src"
    missing = []
    for path in sorted((src / "threadnet").rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__" or parts[:2] == ["threadnet", "_boot"]:
            continue
        names = {".".join(parts[:i]) for i in range(2, len(parts) + 1)}
        if not names & named:
            missing.append(".".join(parts))
    assert not missing, f"modules in no layer of pyproject's contract: {missing}"
