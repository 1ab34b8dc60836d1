"""How every process of the suite is configured: pydantic-settings models whose fields each name
their environment variable (`Field(…, validation_alias="SDV_…")`), validated once at start.

- Constructing a settings class reads the environment for every field not given as an argument
  (arguments win), so `OrchestratorSettings(nats_url=…)` in a test and `load_settings()` in
  `__main__` are the same mechanism.
- A field is set by its variable only (`SDV_NATS_URL`), never by a lower-case variable that
  happens to spell its Python name; an empty variable counts as unset.
- `Settings.load(env, flags=…)` turns a bad value into `SettingsError`, one line that names the
  variable (or the command-line flag it came from) and why; `settings_or_exit` prints it and
  exits with status 2, the usage-error status — never a traceback.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Self, TypeVar

from pydantic import ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)
from pydantic_settings.sources.utils import parse_env_vars

T = TypeVar("T")
# The environment `load(env=…)` reads instead of os.environ (tests, and the agent's explicit env).
_ENVIRONMENT: ContextVar[Mapping[str, str] | None] = ContextVar("sdv_settings_env", default=None)


class SettingsError(ValueError):
    """A process cannot start with this configuration; the message is one line that names the
    variable or flag to fix."""


def current_environment() -> Mapping[str, str]:
    """What settings are being read from: `load(env=…)`'s mapping, else the process's."""
    env = _ENVIRONMENT.get()
    return os.environ if env is None else env


@contextmanager
def reading(env: Mapping[str, str] | None) -> Iterator[None]:
    token = _ENVIRONMENT.set(env)
    try:
        yield
    finally:
        _ENVIRONMENT.reset(token)


class _VariablesOnly(EnvSettingsSource):
    """The environment, restricted to upper-case names: `nats_url=x` in the environment is no
    setting (pydantic-settings would match a field's own name, since fields are also settable by
    name in the constructor)."""

    def _load_env_vars(self) -> Mapping[str, str | None]:
        variables = {k: v for k, v in current_environment().items() if k.isupper()}
        return parse_env_vars(variables, True, self.env_ignore_empty, self.env_parse_none_str)


def variable_of(field: FieldInfo) -> str | None:
    """The environment variable a field is read from (its first alias)."""
    alias = field.validation_alias
    if isinstance(alias, str):
        return alias
    choices = getattr(alias, "choices", None)
    if choices and isinstance(choices[0], str):
        return choices[0]
    return None


def log_level(value: str) -> str:
    """A logging level name (`debug` … `critical`), upper-cased."""
    name = value.strip().upper()
    if not isinstance(logging.getLevelName(name), int):
        raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
    return name


class Settings(BaseSettings):
    """Base of every settings class: fields name their variable with `validation_alias`."""

    model_config = SettingsConfigDict(
        case_sensitive=True, env_ignore_empty=True, validate_by_name=True, validate_by_alias=True,
        extra="forbid",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, _VariablesOnly(settings_cls)

    @classmethod
    def load(cls, env: Mapping[str, str] | None = None, *, flags: Mapping[str, str] | None = None,
             **values: Any) -> Self:
        """The settings from `values` (e.g. command-line flags), then `env` (default: the process's
        environment), then the defaults. `flags` maps a field given in `values` to the flag it came
        from, so an error names what the user typed. Raises `SettingsError`."""
        with reading(env):
            try:
                return cls(**values)
            except ValidationError as err:
                raise SettingsError(describe(err, cls, flags or {})) from None

    @classmethod
    def variables(cls) -> dict[str, str]:
        """Every field and its environment variable."""
        return {name: var for name, field in cls.model_fields.items()
                if (var := variable_of(field)) is not None}


def describe(err: ValidationError, cls: type[BaseSettings], flags: Mapping[str, str]) -> str:
    """One line: the first problem, named by its flag or variable, with the value given."""
    problems = err.errors(include_url=False)
    first = problems[0]
    message = str(first["msg"]).removeprefix("Value error, ")
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    if not first["loc"]:  # a check across fields (model validator): its message says it all
        return message + more
    key = str(first["loc"][0])
    field = key if key in cls.model_fields else next(
        (name for name, f in cls.model_fields.items() if variable_of(f) == key), key)
    info = cls.model_fields.get(field)
    name = flags.get(field) or (variable_of(info) if info is not None else None) or key
    if first["type"] == "extra_forbidden":
        return f"{name}: no such setting{more}"
    if first["type"] == "missing":
        return f"{name} is required{more}"
    return f"{name}={first['input']!r}: {message}{more}"


def settings_or_exit(program: str, load: Callable[[], T]) -> T:
    """`load()`, or — when the configuration is unusable — its one-line reason on stderr and exit
    status 2 (a usage error: nothing was started)."""
    try:
        return load()
    except SettingsError as err:
        print(f"{program}: {err}", file=sys.stderr)
        raise SystemExit(2) from None
