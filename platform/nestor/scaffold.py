"""`nestor new-subapp NAME` and `nestor new-project DIR`: the smallest sub-app that passes its tests.

The files come from `skeletons/` (`*.tmpl`, filled with `string.Template`: `$name`, `$title`,
`$prefix`; a `__name__` in a path becomes the name). What they write is the style guide in
action: a spec, the URL map, thin handlers, a table of its own, a template extending the
layout with a CSRF-protected form, a setting, tests on the test kit, and a pyproject.toml
with the entry point that publishes it as its own distribution.
"""

from __future__ import annotations

import importlib.util
import re
import string
from pathlib import Path

from .config import ConfigError
from .subapp import NAME_RE, installed

SKELETONS = Path(__file__).resolve().parent / "skeletons"
_SUBAPPS_LINE = re.compile(r"^(subapps\s*=\s*\[)([^\]\n]*)(\])", re.MULTILINE)


def new_subapp(name: str, folder: Path, *, prefix: str | None = None, config: Path | None = None) -> list[Path]:
    """Write the package `folder/name`; mount it in `config` when given. Return the files written."""
    _check_name(name, folder)
    values = {
        "name": name,
        "title": name.replace("_", " ").capitalize(),
        "prefix": prefix or f"/{name}",
        "dashed": name.replace("_", "-"),
    }
    if not values["prefix"].startswith("/") or values["prefix"].rstrip("/") == "":
        raise ConfigError(f"--prefix {values['prefix']!r} must start with '/' and name a path, e.g. /{name}")
    written = _copy(SKELETONS / "subapp", folder / name, values)
    if config is not None and config.is_file():
        _mount(config, name)
    return written


def new_project(folder: Path, subapp: str = "notes") -> list[Path]:
    """Write a project in `folder` (nestor.toml, templates/, one sub-app). Return the files written."""
    if (folder / "nestor.toml").exists():
        raise ConfigError(f"{folder / 'nestor.toml'} exists already: {folder} is a project; run nestor new-subapp there")
    title = folder.resolve().name.replace("_", " ").replace("-", " ").capitalize() or "Nestor project"
    _check_name(subapp, folder)
    values = {"name": subapp, "title": title, "upper": subapp.upper()}
    written = _copy(SKELETONS / "project", folder, values)
    return written + new_subapp(subapp, folder)


def _check_name(name: str, folder: Path) -> None:
    if not NAME_RE.match(name):
        raise ConfigError(
            f"sub-app name {name!r} is not valid: use lower-case letters and digits, words joined by "
            "single underscores (e.g. 'notes' or 'team_notes')"
        )
    if (folder / name).exists():
        raise ConfigError(f"{folder / name} exists already: choose another name or remove it")
    if name in installed() or importlib.util.find_spec(name) is not None:
        raise ConfigError(
            f"{name!r} is already the name of an installed sub-app or module: a package of that "
            "name in the project would be ambiguous. Choose another name."
        )


def _copy(source: Path, target: Path, values: dict[str, str]) -> list[Path]:
    written = []
    for template in sorted(source.rglob("*.tmpl")):
        relative = template.relative_to(source).with_suffix("")  # drop .tmpl
        path = target / str(relative).replace("__name__", values["name"])
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(string.Template(template.read_text(encoding="utf-8")).substitute(values), encoding="utf-8")
        written.append(path)
    return written


def _mount(config: Path, name: str) -> None:
    """Add `name` to the `subapps = [...]` line of a config file (a one-line list), or say how to."""
    text = config.read_text(encoding="utf-8")
    found = _SUBAPPS_LINE.search(text)
    if found is None:
        raise ConfigError(
            f"wrote the sub-app, but {config} has no one-line `subapps = [...]`: add \"{name}\" to [nestor] subapps"
        )
    items = found.group(2).strip().rstrip(",")
    listed = f'{items}, "{name}"' if items else f'"{name}"'
    config.write_text(text[: found.start(2)] + listed + text[found.end(2) :], encoding="utf-8")
