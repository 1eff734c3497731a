"""The repository's public URL surface is pinned in tests/routes.golden.json."""

from __future__ import annotations

import json

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
