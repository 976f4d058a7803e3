"""``import weince``: the loss API (the core's names), the adapters imported lazily as
``weince.torch`` / ``weince.jax`` / ``weince.cupy``, and never the command-line tools."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import weince
import weince_core

ROOT = Path(__file__).resolve().parents[1]


def imported_after(script: str) -> list[str]:
    """The modules among the tools and the frameworks that ``script`` leaves imported, run in a
    fresh interpreter (this process has imported them already)."""
    watched = ("weince.cli", "torch", "jax", "cupy", "weince_torch", "weince_jax", "weince_cupy")
    probe = (
        f"{script}\nimport json, sys\n"
        f"print(json.dumps(sorted(m for m in {watched!r} if m in sys.modules)))\n"
    )
    path = os.pathsep.join([str(ROOT), str(ROOT / "adapters"), os.environ.get("PYTHONPATH", "")])
    done = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": path},
        cwd=ROOT,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_import_weince_imports_neither_the_tools_nor_a_framework():
    assert imported_after("import weince; weince.two_view; weince.WEINCEConfig.paper()") == []


def test_an_adapter_is_imported_on_first_use_only():
    if importlib.util.find_spec("torch") is None:
        pytest.skip("PyTorch is not installed")
    assert imported_after("import weince; weince.torch.WEINCELoss") == ["torch", "weince_torch"]
    assert imported_after("import weince.torch") == ["torch", "weince_torch"]


def test_the_core_names_are_the_cores_objects():
    assert set(weince_core.__all__) <= set(weince.__all__)
    for name in weince.__all__:
        assert getattr(weince, name) is getattr(weince_core, name), name
    assert "torch" in dir(weince) and "cli" not in weince.__all__


@pytest.mark.parametrize("framework", ["torch", "jax", "cupy"])
def test_each_adapter_is_the_same_objects_under_weince(framework):
    if importlib.util.find_spec(framework) is None:
        pytest.skip(f"{framework} is not installed")
    adapter = importlib.import_module(f"weince_{framework}")
    lazy = getattr(weince, framework)
    assert lazy is importlib.import_module(f"weince.{framework}")
    assert lazy.__all__ == adapter.__all__
    for name in adapter.__all__:
        assert getattr(lazy, name) is getattr(adapter, name), name
    assert lazy.weince_loss is adapter.weince_loss


def test_an_unknown_attribute_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'tensorflow'"):
        weince.tensorflow  # noqa: B018
