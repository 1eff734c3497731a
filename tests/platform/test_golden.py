"""The repository's public surface is pinned: its URLs in tests/routes.golden.json, its APIs'
OpenAPI documents in tests/openapi/ (the whole tree's, and each API's)."""

from __future__ import annotations

import json

import pytest

from ..fixtures.cli_run import REPO, nestor

GOLDEN = REPO / "tests" / "routes.golden.json"


def rows(text: str) -> set[str]:
    return {f"{r['method']} {r['path']} ({r['name']})" for r in json.loads(text)}


def test_routes_match_the_golden_file() -> None:
    result = nestor("routes", "--json", "--fields", "method,path,name", cwd=REPO)
    assert result.returncode == 0, result.stderr
    if not GOLDEN.is_file():
        raise AssertionError(f"{GOLDEN} is missing: run `make routes-golden` and commit it.")
    golden = GOLDEN.read_text(encoding="utf-8")
    if result.stdout != golden:
        added = sorted(rows(result.stdout) - rows(golden))
        removed = sorted(rows(golden) - rows(result.stdout))
        raise AssertionError(
            "The public URL surface changed (nestor.toml's routes differ from tests/routes.golden.json).\n"
            f"  added:   {added or 'none'}\n  removed: {removed or 'none'}\n"
            "If the change is deliberate, run `make routes-golden` and commit tests/routes.golden.json."
        )


DOCUMENTS = REPO / "tests" / "openapi"


def operations(text: str) -> set[str]:
    paths = json.loads(text)["paths"]
    return {f"{method.upper()} {path}" for path, methods in paths.items() for method in methods}


@pytest.mark.parametrize("level", ["nestor", "polls.api", "chat.api", "monitor.api", "hello.api"])
def test_openapi_documents_match_their_golden_copies(level: str) -> None:
    result = nestor("openapi", *([] if level == "nestor" else [level]), cwd=REPO)
    assert result.returncode == 0, result.stderr
    golden = DOCUMENTS / f"{level}.json"
    if not golden.is_file():
        raise AssertionError(f"{golden} is missing: run `make openapi-golden` and commit it.")
    kept = golden.read_text(encoding="utf-8")
    if result.stdout != kept:
        added = sorted(operations(result.stdout) - operations(kept))
        removed = sorted(operations(kept) - operations(result.stdout))
        raise AssertionError(
            f"The API surface of [{level}] changed (its OpenAPI document differs from {golden.name}).\n"
            f"  operations added: {added or 'none'}\n  removed: {removed or 'none'} (or their schemas changed)\n"
            "If the change is deliberate, run `make openapi-golden` and commit tests/openapi/."
        )
