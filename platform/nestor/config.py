"""Settings, configuration levels and where every value came from.

A `Setting` is a typed `web.AppKey` that also knows its name, default and whether it is
secret. Values come from defaults, from `nestor.toml` (one table per app level:
`[nestor]`, `[polls]`, `[polls.api]`) and from `NESTOR_…` environment variables, and are
placed on the app of the level where they were set, so `request.config_dict[SETTING]`
finds the nearest level and falls back to its parents.

Environment scheme: `NESTOR_<KEY>` sets a root value, `NESTOR_<LEVEL>__<KEY>` a sub-app's,
`NESTOR_<LEVEL>__<CHILD>__<KEY>` a nested one (`NESTOR_POLLS__API__PAGE_SIZE=50`).
Lists are TOML or comma-separated: `NESTOR_SUBAPPS='["a", "b"]'` or `NESTOR_SUBAPPS=a,b`.
`NESTOR_CONFIG` names the file. The environment wins over the file, the file over defaults.
"""

from __future__ import annotations

import difflib
import os
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar

from aiohttp import web

from .redaction import redact

T = TypeVar("T")
LevelPath = tuple[str, ...]  # () is the root, ("polls", "api") is /polls/api
ROOT_TABLE = "nestor"
ENV_PREFIX = "NESTOR_"
CONFIG_ENV = "NESTOR_CONFIG"
DEFAULT_FILE = "nestor.toml"


class ConfigError(Exception):
    """A configuration or plug-in mistake; the message names the thing and the fix."""


class Setting(web.AppKey[T], Generic[T]):
    """A declared setting: a typed `web.AppKey` with a name, a default and a secret flag.

    `secret=True` hides the whole value wherever it is shown; `secret_parts=("signing", ...)`
    names fields of tables and query parameters of URLs inside the value that are secret, on
    top of those every value hides (passwords in URLs, `token`, `apikey`, ...: see `redact`).
    """

    __slots__ = ("name", "type", "default", "secret", "secret_parts", "help", "validate", "root_only")

    def __init__(
        self,
        name: str,
        type: type,
        default: T,
        *,
        secret: bool = False,
        secret_parts: Iterable[str] = (),
        help: str = "",
        validate: Callable[[Any], T] | None = None,
        root_only: bool = False,
    ) -> None:
        super().__init__(f"nestor.{name}", type)
        self.name = name
        self.type = type
        self.default = default
        self.secret = secret
        self.secret_parts = tuple(secret_parts)
        self.help = help
        self.validate = validate
        self.root_only = root_only

    def coerce(self, value: Any) -> T:
        """Return `value` checked against the declared type (and validator); raise ValueError."""
        kind = self.type
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ValueError(f"expected {kind.__name__}, got {type(value).__name__} {value!r}")
        return self.validate(value) if self.validate else value

    def parse_env(self, raw: str) -> T:
        """Return the value of an environment variable's text for this setting."""
        kind = self.type
        if kind is str:
            return self.coerce(raw)
        if kind is bool:
            lowered = raw.strip().lower()
            if lowered in ("1", "true", "yes", "on"):
                return self.coerce(True)
            if lowered in ("0", "false", "no", "off", ""):
                return self.coerce(False)
            raise ValueError(f"expected a boolean (true/false), got {raw!r}")
        if kind in (int, float):
            try:
                number = kind(raw)
            except ValueError:
                raise ValueError(f"expected {kind.__name__}, got {raw!r}") from None
            return self.coerce(number)  # outside the try: the validator's message must reach the user
        try:  # lists and tables are written as TOML values: NESTOR_SUBAPPS='["a", "b"]'
            return self.coerce(tomllib.loads(f"v = {raw}")["v"])
        except tomllib.TOMLDecodeError:
            if kind is list:
                return self.coerce([part.strip() for part in raw.split(",") if part.strip()])
            raise ValueError(f"expected a TOML {kind.__name__}, got {raw!r}") from None

    def show(self, value: Any) -> Any:
        """Return the value as it may be displayed: a secret as `***`, else its secret parts `***` (see `redact`)."""
        if self.secret and value not in (None, ""):
            return "***"
        return redact(value, self.secret_parts)


def one_of(*choices: str) -> Callable[[str], str]:
    """Return a validator accepting only `choices`."""

    def check(value: str) -> str:
        if value not in choices:
            raise ValueError(f"expected one of {', '.join(map(repr, choices))}, got {value!r}")
        return value

    return check


def positive(value: int) -> int:
    """Validate a count that must be at least 1."""
    if value < 1:
        raise ValueError(f"expected a number of at least 1, got {value}")
    return value


def seconds(value: float) -> float:
    """Validate a duration that must be above zero."""
    if value <= 0:
        raise ValueError(f"expected a number of seconds above 0, got {value}")
    return value


def not_negative(value: int) -> int:
    """Validate a count that may be 0."""
    if value < 0:
        raise ValueError(f"expected a number of at least 0, got {value}")
    return value


PAGE_SIZE = Setting(
    "page_size", int, 20, validate=positive, help="Items per page of lists, at any level"
)


SourceKind = Literal["default", "sub-app default", "file", "env", "command line"]


@dataclass(frozen=True)
class Source:
    """Where a value was set: its kind, the place (a file and table, a variable, an option) and its level."""

    kind: SourceKind
    where: str = ""  # "nestor.toml [polls]", "NESTOR_POLLS__PAGE_SIZE", "--port", "polls.api"
    level: LevelPath = ()  # the table the value was set in

    def __str__(self) -> str:
        if self.kind == "default":
            return "default"
        if self.kind == "sub-app default":
            return f"default of sub-app {self.where}"
        if self.kind in ("env", "command line"):
            return f"{self.kind} {self.where}"
        return self.where  # a file (or a mapping given to create_app) and its table


DEFAULT = Source("default")


@dataclass(frozen=True)
class Value:
    """A configured value and where it was set: raw as loaded, or checked against its setting."""

    value: Any
    source: Source

    def describe(self, setting: Setting[Any], at: LevelPath) -> dict[str, Any]:
        """Return a JSON-ready record of this value as seen at level `at`, secrets redacted."""
        source = str(self.source)
        if self.source.kind != "default" and self.source.level != at:
            source = f"inherited from [{label(self.source.level)}] ({source})"
        return {
            "name": setting.name,
            "value": setting.show(self.value),
            "source": source,
            "secret": setting.secret,
        }


@dataclass
class Config:
    """Configuration as loaded: raw values per level table, not yet checked against settings."""

    tables: dict[LevelPath, dict[str, Value]] = field(default_factory=dict)
    origin: str = "defaults"
    base_dir: Path = field(default_factory=Path.cwd)
    specs: tuple[Any, ...] = ()  # sub-app specs given as objects (tests), beside import paths

    def get(self, level: LevelPath, key: str) -> Value | None:
        """Return the raw value set for `key` at exactly `level`, if any."""
        return self.tables.get(level, {}).get(key)


def label(level: LevelPath) -> str:
    """Return the table name of a level: `nestor`, `polls`, `polls.api`."""
    return ".".join(level) if level else ROOT_TABLE


def closest(word: str, candidates: Iterable[str]) -> str:
    """Return ` Did you mean 'x'?` for the nearest candidate, or an empty string."""
    match = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f" Did you mean {match[0]!r}?" if match else ""


def load(path: str | Path | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Return the configuration from a TOML file (or `NESTOR_CONFIG`, or ./nestor.toml) and the environment."""
    environ = os.environ if environ is None else environ
    if path is not None:
        chosen, named_by = path, "--config"
    else:
        chosen, named_by = environ.get(CONFIG_ENV), CONFIG_ENV
    if chosen is None and Path(DEFAULT_FILE).is_file():
        chosen, named_by = DEFAULT_FILE, "the default"
    config = Config()
    if chosen is not None:
        file = Path(chosen).resolve()
        config = from_mapping(_read_toml(file, named_by), origin=str(file), base_dir=file.parent)
    add_environment(config, environ)
    return config


def _read_toml(file: Path, named_by: str) -> dict[str, Any]:
    try:
        return tomllib.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(
            f"config file {str(file)!r} (named by {named_by}) does not exist: "
            f"create it, or point --config or {CONFIG_ENV} at an existing file"
        ) from None
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) else "it is not UTF-8 text"
        raise ConfigError(f"config file {str(file)!r} cannot be read: {reason}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{file}: invalid TOML: {e}") from None


def from_mapping(
    data: Mapping[str, Any], *, origin: str = "create_app(config)", base_dir: Path | None = None
) -> Config:
    """Return a Config from nested tables shaped like nestor.toml (`{"nestor": {...}, "polls": {...}}`)."""
    config = Config(origin=origin, base_dir=base_dir or Path.cwd())
    for name, table in data.items():
        if not isinstance(table, Mapping):
            raise ConfigError(
                f"{origin}: key {name!r} is outside any table: put it under [{ROOT_TABLE}]"
            )
        if name == ROOT_TABLE:
            _add_root_table(config, table)
        else:
            _add_table(config, (name,), table)
    specs = config.get((), "subapps")
    if specs is not None and isinstance(specs.value, list | tuple):
        objects = tuple(s for s in specs.value if not isinstance(s, str))
        names = [s for s in specs.value if isinstance(s, str)]
        config.specs = objects
        config.tables[()]["subapps"] = Value(names, specs.source)
    return config


def _add_root_table(config: Config, table: Mapping[str, Any]) -> None:
    for key, value in table.items():
        if isinstance(value, Mapping):
            # [nestor.polls] would silently merge with [polls]: sub-app tables are top-level.
            raise ConfigError(
                f"{config.origin}: table [{ROOT_TABLE}.{key}]: sub-app tables are top-level, "
                f"write [{key}] instead"
            )
    _add_table(config, (), table)


def _add_table(config: Config, level: LevelPath, table: Mapping[str, Any]) -> None:
    values = config.tables.setdefault(level, {})
    source = Source("file", f"{config.origin} [{label(level)}]", level)
    for key, value in table.items():
        if isinstance(value, Mapping):
            # A nested table is a child level: [polls.api] is {"polls": {"api": {...}}}.
            _add_table(config, (*level, key), value)
        else:
            values[key] = Value(value, source)


def add_command_line(config: Config, values: Mapping[str, Any]) -> None:
    """Add root values given on the command line (`--host`, `--port`); they override the rest."""
    for key, value in values.items():
        config.tables.setdefault((), {})[key] = Value(value, Source("command line", f"--{key}"))


def add_environment(config: Config, environ: Mapping[str, str]) -> None:
    """Add `NESTOR_…` variables to `config`; they override the file."""
    for var, raw in sorted(environ.items()):
        if not var.startswith(ENV_PREFIX) or var == CONFIG_ENV:
            continue
        *levels, key = var[len(ENV_PREFIX) :].lower().split("__")
        if not key or not all(levels):
            raise ConfigError(
                f"environment variable {var}: expected NESTOR_<KEY> or NESTOR_<LEVEL>__<KEY>"
            )
        config.tables.setdefault(tuple(levels), {})[key] = Value(raw, Source("env", var, tuple(levels)))


def resolve(setting: Setting[Any], raw: Value) -> Value:
    """Return a raw value checked against its setting; raise ConfigError naming where it was set."""
    try:
        if raw.source.kind == "env" and isinstance(raw.value, str):
            return Value(setting.parse_env(raw.value), raw.source)
        return Value(setting.coerce(raw.value), raw.source)
    except ValueError as e:
        # The checkers quote the rejected value; a secret's must not reach logs or terminals.
        reason = f"not a valid {setting.type.__name__} (value hidden: secret)" if setting.secret else e
        raise ConfigError(f"{raw.source}: {setting.name}: {reason}") from None
