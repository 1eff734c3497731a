"""The public SDK: `nestor.__all__` is everything a sub-app imports, each name documented."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import nestor
from nestor import Setting

ROOT = Path(__file__).resolve().parents[2]
SUBAPPS = ROOT / "subapps"
README = (ROOT / "README.md").read_text(encoding="utf-8")


def kernel_imports(file: Path) -> list[str]:
    """Return each import of a kernel module (anything but the top-level `nestor` names) in a file."""
    found = []
    for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [f"import {a.name}" for a in node.names if a.name.startswith("nestor.")]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.startswith("nestor."):
                found.append(f"from {node.module} import ...")
            elif node.module == "nestor":
                found += [f"from nestor import {a.name}" for a in node.names if a.name not in nestor.__all__]
    return [f"{file.relative_to(ROOT)}: {text}" for text in found]


def test_first_party_subapps_import_only_the_sdk() -> None:
    files = sorted(SUBAPPS.rglob("*.py"))
    assert len(files) > 20  # the scan sees the sub-apps
    assert [line for file in files for line in kernel_imports(file)] == []


@pytest.mark.parametrize("name", nestor.__all__)
def test_every_public_name_is_documented_in_code(name: str) -> None:
    obj = getattr(nestor, name)
    if isinstance(obj, Setting):
        assert obj.help, f"setting {name} has no help text"
    elif callable(obj):
        doc = (obj.__doc__ or "").strip()
        assert doc, f"{name} has no docstring"
    else:  # typed keys: documented where they are listed in README
        assert type(obj).__name__ in ("AppKey", "RequestKey"), f"{name} is neither documented nor a key"


@pytest.mark.parametrize("name", nestor.__all__)
def test_every_public_name_is_in_the_readme_reference(name: str) -> None:
    assert f"`{name}" in README, f"README's SDK reference does not mention {name}"


def test_the_surface_fits_on_one_screen() -> None:
    assert len(nestor.__all__) == len(set(nestor.__all__)) <= 48
