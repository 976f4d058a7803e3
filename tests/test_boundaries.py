"""The packages' boundaries, read from the source (nothing is imported to check them).

- ``weince_core`` imports no adapter (``weince_torch``, ``weince_jax``, ``weince_cupy``) and
  nothing of ``weince`` (the tools): the core runs on any namespace by itself.
- An adapter imports no other adapter and nothing of ``weince``.
- No test outside ``tests/cli`` imports the command-line tools (``weince.cli``, and the tool
  modules of ``weince``): the tests find backends, tolerances and reference vectors in
  ``weince_core.testing``, and the runs through the adapters in ``weince.testing``. ``weince``
  itself, its lazy ``weince.torch`` / ``weince.jax`` / ``weince.cupy`` and ``weince.testing``
  are the library, not tools.

An import is ``import x``, ``from x import y`` (``x.y`` counts too: it may be a module), a
relative import (resolved against the file's package), or ``importlib.import_module("x")`` /
``__import__("x")`` with a literal name, wherever it sits (a function body included).
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ADAPTERS = ("weince_torch", "weince_jax", "weince_cupy")
# The names under ``weince`` that are the library (the loss API, the adapter runs), not tools.
LIBRARY = ("torch", "jax", "cupy", "testing")


def imported_modules(source: str, package: str = "") -> Iterator[tuple[int, str]]:
    """Every module a source may import, with its line.

    Args:
        source: Python source.
        package: the dotted package the source belongs to (for relative imports).

    Returns:
        ``(line, dotted name)`` pairs; ``from x import y`` gives ``x`` and ``x.y``.
    """
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".") if package else []
                parts = parts[: len(parts) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            yield node.lineno, base
            for alias in node.names:
                if alias.name != "*":
                    yield node.lineno, f"{base}.{alias.name}"
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            first = node.args[0]
            if name in ("import_module", "__import__") and isinstance(first, ast.Constant):
                if isinstance(first.value, str):
                    yield node.lineno, first.value


def _top(module: str) -> str:
    return module.partition(".")[0]


def is_adapter(module: str) -> bool:
    """Whether ``module`` is an adapter package or one of its modules."""
    return _top(module) in ADAPTERS


def is_tools(module: str) -> bool:
    """Whether ``module`` is a command-line tool: ``weince.cli`` or a tool module of ``weince``.

    ``weince`` itself, ``weince.torch`` / ``weince.jax`` / ``weince.cupy`` (the loss API) and
    ``weince.testing`` (the runs through the adapters) are the library.
    """
    top, _, rest = module.partition(".")
    return top == "weince" and bool(rest) and rest.partition(".")[0] not in LIBRARY


def is_weince(module: str) -> bool:
    """Whether ``module`` is ``weince`` or under it (the umbrella package and its tools)."""
    return _top(module) == "weince"


def violations(
    source: str, package: str, forbidden: Callable[[str], bool]
) -> list[tuple[int, str]]:
    """The imports of ``source`` that ``forbidden`` rejects.

    Args:
        source: Python source.
        package: the dotted package the source belongs to (for relative imports).
        forbidden: says whether a dotted module name may not be imported.

    Returns:
        ``(line, module)`` for each forbidden import.
    """
    hits = {(line, name) for line, name in imported_modules(source, package) if forbidden(name)}
    # ``from weince.cli import main`` is one import of ``weince.cli``, not two.
    return sorted(hit for hit in hits if (hit[0], hit[1].rpartition(".")[0]) not in hits)


def _package(path: Path, root: Path) -> str:
    return ".".join(path.relative_to(root).parent.parts)


def _sources(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.py"))


def _report(found: dict[Path, list[tuple[int, str]]], base: Path = ROOT) -> str:
    return "\n".join(
        f"{path.relative_to(base).as_posix()}:{line}: imports {name}"
        for path, hits in found.items()
        for line, name in hits
    )


# -- the checker on planted violations ----------------------------------------------------------


@pytest.mark.parametrize(
    "source",
    [
        "import weince_torch",
        "import weince_jax.loss as loss",
        "from weince_cupy import value_and_grad",
        "def f():\n    import weince_torch\n",
        "import importlib\nimportlib.import_module('weince_jax')",
        "from importlib import import_module\nimport_module('weince_cupy._kernels')",
        "__import__('weince_torch')",
    ],
)
def test_the_checker_finds_an_adapter_import(source):
    assert violations(source, "weince_core", is_adapter)


@pytest.mark.parametrize(
    "source",
    [
        "from weince import crosscheck",
        "import weince.cli",
        "from weince.cli import main",
        "from weince.backends import all_backends",
        "import importlib\nimportlib.import_module('weince.cli')",
    ],
)
def test_the_checker_finds_a_tools_import(source):
    assert violations(source, "tests.core", is_tools)


@pytest.mark.parametrize(
    "source",
    [
        "import weince",
        "from weince import torch",
        "import weince.jax",
        "from weince.testing import all_backends",
        "from weince_core.testing import all_backends",
        "import numpy as np\nx = np.load('weince_torch')",
        "name = 'weince.cli'",  # a string is not an import
    ],
)
def test_the_checker_lets_the_loss_api_and_the_core_through(source):
    assert not violations(source, "tests.core", is_tools)


def test_the_checker_resolves_relative_imports():
    def names(source, package):
        return {name for _, name in imported_modules(source, package)}

    assert "weince_core.ops" in names("from . import ops", "weince_core")
    assert "weince_core.state" in names("from ..state import init_state", "weince_core.sub")
    assert violations("from .cli import main", "weince", is_tools)
    assert not violations("from .loss import weince_loss", "weince_jax", is_tools)


# -- the repository -------------------------------------------------------------------------


def _check(
    paths: list[Path], root: Path, forbidden: Callable[[str], bool], base: Path = ROOT
) -> str:
    assert paths, f"no source found under {root}"
    found = {}
    for path in paths:
        hits = violations(path.read_text(), _package(path, root), forbidden)
        if hits:
            found[path] = hits
    return _report(found, base)


def test_the_core_imports_no_adapter_and_no_tool():
    core = ROOT / "weince_core"
    found = _check(_sources(core), ROOT, lambda m: is_adapter(m) or is_weince(m))
    assert not found, f"weince_core must stand alone:\n{found}"


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_an_adapter_imports_no_other_adapter_and_no_tool(adapter):
    folder = ROOT / "adapters" / adapter
    found = _check(
        _sources(folder),
        ROOT / "adapters",
        lambda m: (is_adapter(m) and _top(m) != adapter) or is_weince(m),
    )
    assert not found, f"{adapter} may import only weince_core and itself:\n{found}"


def tools_imports_in(tests: Path, root: Path) -> str:
    """The imports of the tools by tests outside ``tests/cli``, one line each.

    Args:
        tests: the tests' folder.
        root: the folder the packages of ``tests`` are relative to.

    Returns:
        The report; empty when there is none.
    """
    paths = [p for p in _sources(tests) if "cli" not in p.relative_to(tests).parts[:1]]
    return _check(paths, root, is_tools, base=root)


def test_the_tests_check_finds_a_planted_tools_import(tmp_path):
    tests = tmp_path / "tests"
    (tests / "core").mkdir(parents=True)
    (tests / "cli").mkdir()
    (tests / "core" / "test_planted.py").write_text("from weince.cli import forms_check\n")
    (tests / "cli" / "test_allowed.py").write_text("from weince.cli import crosscheck\n")
    (tests / "test_library.py").write_text("from weince.testing import run_case\n")
    found = tools_imports_in(tests, tmp_path)
    assert "tests/core/test_planted.py:1: imports weince.cli" in found
    assert "test_allowed" not in found and "test_library" not in found


def test_no_test_outside_tests_cli_imports_the_tools():
    found = tools_imports_in(ROOT / "tests", ROOT)
    assert not found, f"tests outside tests/cli must not import the tools:\n{found}"
