"""The documentation: the site builds strictly, and every Python snippet in it runs.

Site. ``mkdocs build --strict`` (``mkdocs.yml``) must succeed: a broken link, a page missing
from the navigation or an API reference to something that no longer exists fails the build.

Snippets. Every fenced block whose language is ``python`` or ``py``, in ``docs/**/*.md`` and in
``README.md``, is code that must run. The blocks of one page run in order, in one namespace, in a
fresh interpreter started in an empty temporary folder, as a reader pasting them would run them:
one test per page. Other languages (``bash``, ``text``) are not run.

A block that needs something a machine may lack says so in its fence, after the language::

    ```python {requires=cupy,gpu}

Each comma-separated name after ``requires=`` is a module that must be importable, or ``gpu``
(a CUDA device, as seen by CuPy or PyTorch). Where one is missing the block is not run; the test
runs the page's other blocks, then reports the page as skipped with the reason (a failure in the
blocks that ran is still a failure). Snippets run with ``OMP_NUM_THREADS=1`` unless it is set.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
PYTHON_LANGUAGES = {"python", "py"}
OPENING_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^`\n]*)$")
REQUIRES = re.compile(r"requires=(?P<names>[\w.,]+)")
PAGE_TIMEOUT_S = 300

# Runs in the subprocess: the blocks arrive as JSON on stdin. Each is compiled under the page's
# path with its real line numbers, so a traceback points into the Markdown file.
RUNNER = """
import json, sys
namespace = {"__name__": "__main__"}
for block in json.load(sys.stdin):
    source = "\\n" * (block["line"] - 1) + block["code"]
    exec(compile(source, block["path"], "exec"), namespace)
"""


@dataclass(frozen=True)
class Block:
    path: str  # the Markdown file, for tracebacks
    line: int  # line of the block's first line of code in the file
    code: str
    requires: tuple[str, ...]


def python_blocks(path: Path) -> list[Block]:
    """The Python blocks of one Markdown file, in order, dedented to their fence."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        opening = OPENING_FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        indent, fence, info = opening["indent"], opening["fence"], opening["info"].strip()
        closing = re.compile(rf"^[ \t]*{re.escape(fence[0])}{{{len(fence)},}}[ \t]*$")
        end = i + 1
        while end < len(lines) and not closing.match(lines[end]):
            end += 1
        language = info.split("{")[0].strip().split(" ")[0].lower() if info else ""
        if language in PYTHON_LANGUAGES:
            body = [
                line[len(indent) :] if line.startswith(indent) else line
                for line in lines[i + 1 : end]
            ]
            requires = REQUIRES.search(info)
            blocks.append(
                Block(
                    path=str(path),
                    line=i + 2,
                    code="\n".join(body) + "\n",
                    requires=tuple(requires["names"].split(",")) if requires else (),
                )
            )
        i = end + 1
    return blocks


def pages_with_snippets() -> list[Path]:
    pages = [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]
    return [page for page in pages if python_blocks(page)]


@functools.cache
def has_gpu() -> bool:
    if importlib.util.find_spec("cupy") is not None:
        cupy = importlib.import_module("cupy")
        try:
            return bool(cupy.cuda.runtime.getDeviceCount() > 0)
        except Exception:  # CUDARuntimeError and friends: no driver, no device
            return False
    if importlib.util.find_spec("torch") is not None:
        return bool(importlib.import_module("torch").cuda.is_available())
    return False


def missing(requirement: str) -> str | None:
    """Why ``requirement`` is not met here, or None."""
    if requirement == "gpu":
        return None if has_gpu() else "no CUDA device"
    if importlib.util.find_spec(requirement.split(".")[0]) is None:
        return f"{requirement} is not installed"
    return None


def page_id(page: Path) -> str:
    return str(page.relative_to(ROOT).with_suffix(""))


PAGES = pages_with_snippets()


def test_every_python_block_is_found():
    # A guard on the extractor itself: the quickstart exists and holds code.
    assert any(page.name == "numpy.md" for page in PAGES)
    assert all(block.code.strip() for page in PAGES for block in python_blocks(page))


def test_site_builds_strictly(tmp_path):
    site = tmp_path / "site"
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        env=dict(os.environ, NO_MKDOCS_2_WARNING="1"),  # mkdocs-material's end-of-life banner
        capture_output=True,
        text=True,
        timeout=PAGE_TIMEOUT_S,
    )
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stderr[-6000:]}"
    # The formulas went through arithmatex and the API reference was generated from docstrings.
    assert 'class="arithmatex"' in (site / "math" / "index.html").read_text(encoding="utf-8")
    reference = (site / "reference" / "core" / "index.html").read_text(encoding="utf-8")
    for name in ["WEINCEConfig", "init_state", "nt_xent_value_and_grad", "rows_forward"]:
        assert f'id="weince_core.{name}"' in reference, name


@pytest.mark.slow
@pytest.mark.parametrize("page", PAGES, ids=[page_id(p) for p in PAGES])
def test_snippets_run(page, tmp_path):
    blocks = python_blocks(page)
    runnable, skipped = [], []
    for block in blocks:
        reasons = [r for r in map(missing, block.requires) if r]
        if reasons:
            skipped.append(f"line {block.line}: {', '.join(reasons)}")
        else:
            runnable.append(block)
    if runnable:
        env = dict(os.environ, MPLBACKEND="Agg")
        # One thread: the snippets are small, and a busy machine makes multithreaded BLAS and
        # OpenMP kernels (PyTorch's in particular) spin and crawl.
        env.setdefault("OMP_NUM_THREADS", "1")
        source_paths = [str(ROOT), str(ROOT / "adapters")]
        env["PYTHONPATH"] = os.pathsep.join([*source_paths, env.get("PYTHONPATH", "")])
        result = subprocess.run(
            [sys.executable, "-c", RUNNER],
            input=json.dumps([block.__dict__ for block in runnable]),
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=PAGE_TIMEOUT_S,
        )
        # Tracebacks name the Markdown file and line (ROOT-relative).
        assert result.returncode == 0, (
            f"a snippet of {page_id(page)} failed:\n{result.stderr[-6000:]}"
        )
    if skipped:
        pytest.skip(
            f"{page_id(page)}: ran {len(runnable)} of {len(blocks)} blocks; "
            f"not run: {'; '.join(skipped)}"
        )
