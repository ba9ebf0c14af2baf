"""The README's examples work (issue 9 g): every ```python block runs, in a subprocess with
a timeout, its /tmp paths moved into a temporary directory where the test has started the
switch the examples use; every `threadnet` command in a ```sh block parses with the real
argument parser, so the README cannot drift from the CLI.

A block preceded by ``<!-- readme-test: skip (why) -->`` is not run; one preceded by
``<!-- readme-test: continue ... -->`` runs appended to the block before it."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import threadnet_cmd, threadnet_env

README = Path(__file__).resolve().parent.parent / "README.md"
_BLOCK = re.compile(r"(?:<!-- readme-test: (\w+)[^>]*-->\n)?```(\w*)\n(.*?)```", re.S)


def blocks() -> list[tuple[str | None, str, str, int]]:
    text = README.read_text()
    return [(m.group(1), m.group(2), m.group(3), text.count("\n", 0, m.start()) + 1)
            for m in _BLOCK.finditer(text)]


def python_programs() -> list[tuple[int, str]]:
    """(line, code) of each program to run: continued blocks joined to the one before."""
    out: list[tuple[int, str]] = []
    for marker, lang, code, line in blocks():
        if lang != "python" or marker == "skip":
            continue
        if marker == "continue":
            assert out, f"README line {line}: nothing to continue"
            out[-1] = (out[-1][0], out[-1][1] + "\n" + code)
        else:
            out.append((line, code))
    return out


def test_readme_has_few_skips():
    skips = [line for marker, _, _, line in blocks() if marker == "skip"]
    assert len(skips) <= 2, f"README blocks skipped at lines {skips}: keep skips few"
    assert all(m in (None, "skip", "continue") for m, _, _, _ in blocks())


@pytest.mark.parametrize("line,code", python_programs(), ids=lambda v: f"line{v}"
                         if isinstance(v, int) else "")
def test_readme_python_block_runs(line, code, sockdir, procs):
    sw = f"{sockdir}/sw1"
    procs.daemon(threadnet_cmd("switch", "-s", sw, "-d", "-p", sw + ".pid"), sw + ".pid",
                 env=threadnet_env())
    program = code.replace("/tmp/", f"{sockdir}/")
    try:
        r = subprocess.run([sys.executable, "-c", program], cwd=sockdir, env=threadnet_env(),
                           stdin=subprocess.DEVNULL, capture_output=True, text=True,
                           timeout=120)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"README block at line {line} did not finish: {exc}")
    assert r.returncode == 0, f"README block at line {line} failed:\n{r.stderr}"


def _threadnet_commands(code: str) -> list[list[str]]:
    """The argument lists of the `threadnet ...` commands in a shell block."""
    found = []
    for raw in code.splitlines():
        line = raw.split("  #")[0].split(" # ")[0].strip()
        if line.startswith("#") or "threadnet" not in line:
            continue
        words = shlex.split(line, comments=True)
        for i, w in enumerate(words):
            if w == "threadnet":
                cmd = []
                for x in words[i + 1:]:
                    if x in ("&&", "||", "|", "&", ";"):
                        break
                    cmd.append(x)
                found.append(cmd)
    return found


def test_readme_threadnet_commands_parse():
    from threadnet.cli import build_parser

    checked = 0
    for _, lang, code, line in blocks():
        if lang not in ("sh", "bash", "console"):
            continue
        for args in _threadnet_commands(code):
            parser = build_parser()
            try:
                ns = parser.parse_args(args)
            except Exception as exc:  # UsageError: one line naming the problem
                pytest.fail(f"README line {line}: threadnet {shlex.join(args)}: {exc}")
            assert getattr(ns, "func", None), f"README line {line}: {args}"
            checked += 1
    assert checked >= 15, checked


def test_up_as_root_uses_vde_switch_default(tmp_path, monkeypatch):
    """The README says root's default switch is /var/run/vde.ctl, as vde_switch's (and
    vdeplug4's vde_plug looks there first): with no ~/.vdeplug/default, so it is."""
    import os

    from threadnet.link.vde import default_switch_dir

    monkeypatch.setenv("HOME", str(tmp_path))
    want = "/var/run/vde.ctl" if os.geteuid() == 0 else "/tmp/vde.ctl"
    assert default_switch_dir() == want
