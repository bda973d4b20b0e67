"""Loading the one :class:`~clibridge._config.Config` from defaults, file, env and flags.

Theory of operation
-------------------
Every leaf field of the attrs :class:`Config` tree is a *setting* with a dotted key
(``server.port``, ``claude.pool.workers``, ``backend``). :func:`settings` derives them from
the attrs fields themselves, with the ``#:`` comments of :mod:`clibridge._config` as help,
so a new field is a new flag, env variable and TOML key without further work here.

Sources, later winning: defaults < TOML file (``--config`` / ``CLIBRIDGE_CONFIG``) <
``CLIBRIDGE_*`` environment < command-line flags. Each source is flattened into
``{key: (raw value, where it came from)}``; within one source a backend-specific key
(``claude.pool.workers``) beats the shared alias that sets both backends
(``pool.workers``, flag ``--workers``). Each winning raw value is coerced to its field's
type and checked by the field's attrs validator *individually*, so an error names the
setting and its source::

    clibridge: error: server.port = 'eighty' (from env CLIBRIDGE_PORT): expected an integer

The checked values are then structured once through cattrs into the frozen Config.

Names
-----
- TOML: the Config nesting (``[server] port = 7483``, ``[claude.pool] workers = 2``,
  ``[models] fast = "claude:haiku"``), plus ``server.auth_token_file``.
- Flags: ``--port`` for ``server.*``; ``--backend``, ``--state-dir``, ``--log-level``,
  ``--model ALIAS=TARGET`` (repeatable) at the top; ``--claude-<field>`` and
  ``--codex-<field>`` for a backend and its pool (``--claude-workers``); ``--workers``,
  ``--enable-cli-tools``, ... for both backends at once.
- Environment: ``CLIBRIDGE_`` + the flag name in upper case (``CLIBRIDGE_PORT``,
  ``CLIBRIDGE_CLAUDE_WORKERS``, ``CLIBRIDGE_WORKERS``), or the dotted key with ``__``
  (``CLIBRIDGE_CLAUDE__POOL__WORKERS``). Lists are shell-split (``CLIBRIDGE_CLAUDE_COMMAND=
  "clibridge-fake-claude --scenario x"``), booleans are true/false/1/0/yes/no/on/off,
  ``CLIBRIDGE_MODELS="fast=claude:haiku,deep=codex:gpt-5"``. The auth token may also come
  from ``CLIBRIDGE_API_KEY`` or a file (``--auth-token-file`` / ``CLIBRIDGE_AUTH_TOKEN_FILE``).
"""

from __future__ import annotations

import ast
import inspect
import ipaddress
import logging
import math
import re
import shlex
import tomllib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import attrs
import cattrs

from . import _config
from ._config import AccountConfig, Config

log = logging.getLogger("clibridge.config")

LOG_LEVELS = ("debug", "info", "warning", "error", "critical")

#: env variables with the CLIBRIDGE_ prefix that are not settings (other components read them)
_FOREIGN_ENV_PREFIXES = (
    "CLIBRIDGE_CONFIG",
    "CLIBRIDGE_FAKE_",
    "CLIBRIDGE_REALCLI",
    "CLIBRIDGE_CODEX_SCHEMA",
    "CLIBRIDGE_TEST",
)

# Help for fields that have no ``#:`` comment in _config.py (the comment wins when present).
_EXTRA_HELP: dict[str, str] = {
    "server.host": "address to bind; anything but loopback requires an auth token",
    "server.port": "TCP port to listen on (0 picks a free one)",
    "server.max_body_bytes": "largest request body accepted (413 beyond)",
    "server.max_messages": "most messages one request may carry (413 beyond)",
    "server.max_prompt_chars": "largest prompt (system + messages + tools, in characters) accepted (413 beyond)",
    "pool.max_queue": "requests that may wait for a worker; beyond that: 429",
    "pool.queue_timeout": "seconds a request may wait for a worker before it gets 429",
    "pool.turn_timeout": "wallclock limit of one turn in seconds (504 beyond)",
    "pool.stream_idle_timeout": "seconds the CLI may stay silent mid-turn before the turn fails (504)",
    "pool.ready_timeout": "seconds a new worker has to boot and answer its readiness ping",
    "pool.max_age": "retire a worker after this many seconds of life",
    "pool.restart_backoff_initial": "first delay before restarting a crashed worker (doubles)",
    "pool.restart_backoff_max": "longest delay between worker restarts",
    "codex.command": "argv prefix that runs the codex CLI",
    "codex.enable_cli_tools": "let the model use the CLI's own tools (shell, file edits, web)",
    "codex.use_real_home": "run in the operator's real HOME instead of clibridge's spawn home",
    "codex.pass_env": "extra environment variable names passed through to the CLI",
    "codex.login_hint": "the command an operator runs to log in again",
    "backend": "which backends to run: auto detects logged-in CLIs and falls back to the bundled fake",
    "models": "model alias -> 'backend:cli-model-id' (repeatable ALIAS=TARGET)",
    "log_level": "logging level: " + ", ".join(LOG_LEVELS),
}

#: fields shared by both backend configs that get a flag/env alias setting both at once
_SHARED_BACKEND_FIELDS = ("enable_cli_tools", "use_real_home", "pass_env")

#: settings whose value is a secret (redacted when the config is printed)
SECRET_KEYS = frozenset({"server.auth_token"})


class ConfigError(Exception):
    """A setting has a bad value; the message names the setting and where it came from."""


class _BadValue(ValueError):
    """A value :func:`_coerce` refuses with a message of its own (not just its type)."""


@attrs.frozen
class Setting:
    """One configurable leaf: its dotted key, type, default, help and names."""

    key: str
    type: Any
    default: Any
    help: str
    flag: str  # "--port"
    env: tuple[str, ...]  # accepted env names, the first is documented
    #: the real keys an alias sets (empty for a real field)
    targets: tuple[str, ...] = ()
    validator: Any = None

    @property
    def is_alias(self) -> bool:
        return bool(self.targets)


# --------------------------------------------------------------------------- the settings table


def _field_comments(cls: type) -> dict[str, str]:
    """The ``#:`` comment lines right above each field of ``cls`` in its source."""
    try:
        lines, _start = inspect.getsourcelines(cls)
    except (OSError, TypeError):
        return {}
    src = "".join(lines)
    tree = ast.parse(src)
    body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
    src_lines = src.splitlines()
    out: dict[str, str] = {}
    for node in body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            comment: list[str] = []
            i = node.lineno - 2
            while i >= 0 and src_lines[i].strip().startswith("#:"):
                comment.insert(0, src_lines[i].strip()[2:].strip())
                i -= 1
            if comment:
                out[node.target.id] = " ".join(comment)
    return out


def _flag_for(key: str) -> str:
    parts = key.split(".")
    if parts[0] == "server":
        parts = parts[1:]
    elif parts[0] in ("claude", "codex") and len(parts) == 3:  # claude.pool.workers
        parts = [parts[0], parts[2]]
    name = "-".join(parts).replace("_", "-")
    singular = {
        "models": "--model",
        "codex-overrides": "--codex-override",
        "cors-origins": "--cors-origin",
        "allowed-hosts": "--allowed-host",
        "claude-accounts": "--claude-account",
        "codex-accounts": "--codex-account",
    }
    return singular.get(name, f"--{name}")


def _env_for(key: str, flag: str) -> tuple[str, ...]:
    names = ["CLIBRIDGE_" + flag[2:].replace("-", "_").upper()]
    if key == "models":
        names.insert(0, "CLIBRIDGE_MODELS")
    nested = "CLIBRIDGE_" + key.replace(".", "__").upper()
    if nested not in names:
        names.append(nested)
    return tuple(names)


def _walk(cls: type, prefix: str, defaults: object) -> list[Setting]:
    hints = typing.get_type_hints(cls, vars(_config))
    comments = _field_comments(cls)
    out: list[Setting] = []
    for field in attrs.fields(cls):
        key = f"{prefix}{field.name}"
        tp = hints[field.name]
        default = getattr(defaults, field.name)
        if attrs.has(tp):
            out.extend(_walk(tp, key + ".", default))
            continue
        generic = "pool." + field.name if ".pool." in key else key
        help_text = comments.get(field.name) or _EXTRA_HELP.get(key) or _EXTRA_HELP.get(generic, "")
        flag = _flag_for(key)
        out.append(
            Setting(key, tp, default, help_text, flag, _env_for(key, flag), (), field.validator)
        )
    return out


def _build_settings() -> tuple[Setting, ...]:
    real = _walk(Config, "", Config())
    by_key = {s.key: s for s in real}
    aliases: list[Setting] = []
    pool_fields = [s for s in real if s.key.startswith("claude.pool.")]
    for s in pool_fields:
        name = s.key.rsplit(".", 1)[1]
        targets = (f"claude.pool.{name}", f"codex.pool.{name}")
        flag = "--" + name.replace("_", "-")
        aliases.append(
            Setting(
                f"pool.{name}",
                s.type,
                None,
                f"{s.help} (both backends; --claude-{flag[2:]} / --codex-{flag[2:]} set one)",
                flag,
                _env_for(f"pool.{name}", flag),
                targets,
                s.validator,
            )
        )
    for name in _SHARED_BACKEND_FIELDS:
        s = by_key[f"claude.{name}"]
        flag = "--" + name.replace("_", "-")
        aliases.append(
            Setting(
                name,
                s.type,
                None,
                f"{s.help} (both backends)",
                flag,
                _env_for(name, flag),
                (f"claude.{name}", f"codex.{name}"),
                s.validator,
            )
        )
    token_file = Setting(
        "server.auth_token_file",
        Path | None,
        None,
        "read the auth token from this file (first line; keeps it out of `ps`)",
        "--auth-token-file",
        ("CLIBRIDGE_AUTH_TOKEN_FILE",),
        ("server.auth_token",),
    )
    return (*real, *aliases, token_file)


_SETTINGS: tuple[Setting, ...] | None = None


def settings() -> tuple[Setting, ...]:
    """Every setting: the Config leaves first, then the aliases that set several at once."""
    global _SETTINGS
    if _SETTINGS is None:
        _SETTINGS = _build_settings()
    return _SETTINGS


def _by_key() -> dict[str, Setting]:
    return {s.key: s for s in settings()}


# --------------------------------------------------------------------------- coercion


def _strip_optional(tp: Any) -> tuple[Any, bool]:
    if get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(get_args(tp)) == 2:
            return args[0], True
    return tp, False


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _describe(tp: Any) -> str:
    tp, _ = _strip_optional(tp)
    if tp is bool:
        return "a boolean (true/false)"
    if tp is int:
        return "an integer"
    if tp is float:
        return "a number"
    if get_origin(tp) is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if tp == tuple[AccountConfig, ...]:
        return (
            "a list of accounts: [[...accounts]] tables with a name (and for claude a token, "
            "token_env or token_file), or NAME[=TOKEN_ENV] strings"
        )
    if get_origin(tp) is tuple:
        return "a list of strings"
    if get_origin(tp) is dict:
        return "a table of ALIAS = TARGET strings"
    return "a string"


def _coerce(raw: Any, tp: Any, *, from_text: bool) -> Any:
    """``raw`` as a value of ``tp``; ``from_text`` allows parsing strings (env, flags)."""
    inner, optional = _strip_optional(tp)
    if raw is None:
        if optional:
            return None
        raise ValueError
    if optional and from_text and isinstance(raw, str) and raw.strip().lower() in ("", "none"):
        return None
    tp = inner
    if tp is bool:
        if isinstance(raw, bool):
            return raw
        if from_text and isinstance(raw, str) and raw.strip().lower() in _TRUE | _FALSE:
            return raw.strip().lower() in _TRUE
        raise ValueError
    if tp is int:
        if isinstance(raw, bool):
            raise ValueError
        if isinstance(raw, int):
            return raw
        if from_text and isinstance(raw, str):
            return int(raw.strip().replace("_", ""))
        raise ValueError
    if tp is float:
        if isinstance(raw, bool):
            raise ValueError
        value = float(raw.strip()) if from_text and isinstance(raw, str) else raw
        if not isinstance(value, int | float) or not math.isfinite(value):
            raise ValueError
        return float(value)
    if tp is str:
        if isinstance(raw, str):
            return raw
        raise ValueError
    if tp is Path:
        if isinstance(raw, str | Path) and str(raw):
            return Path(raw).expanduser()
        raise ValueError
    if get_origin(tp) is Literal:
        if isinstance(raw, str) and raw in get_args(tp):
            return raw
        raise ValueError
    if tp == tuple[AccountConfig, ...]:
        return _coerce_accounts(raw, from_text=from_text)
    if get_origin(tp) is tuple:
        if isinstance(raw, str) and from_text:
            return tuple(shlex.split(raw))
        if isinstance(raw, list | tuple) and all(isinstance(x, str) for x in raw):
            return tuple(raw)
        raise ValueError
    if get_origin(tp) is dict:
        if isinstance(raw, str) and from_text:
            raw = [p for p in (x.strip() for x in raw.split(",")) if p]
        if isinstance(raw, list | tuple):
            out: dict[str, str] = {}
            for item in raw:
                alias, sep, target = str(item).partition("=")
                if not sep or not alias.strip() or not target.strip():
                    raise ValueError
                out[alias.strip()] = target.strip()
            return out
        if isinstance(raw, Mapping) and all(
            isinstance(k, str) and isinstance(v, str) for k, v in raw.items()
        ):
            return dict(raw)
        raise ValueError
    raise TypeError(f"no coercion for {tp!r}")  # a new field type: teach _coerce


_ACCOUNT_FIELDS = {"name": str, "token": str, "token_env": str, "token_file": Path}


def _coerce_accounts(raw: Any, *, from_text: bool) -> tuple[AccountConfig, ...]:
    """TOML tables (``{name, token | token_env | token_file}``), or ``NAME[=TOKEN_ENV]``
    strings (flags, env; shell-split from env). Messages never quote a token."""
    if isinstance(raw, str) and from_text:
        raw = shlex.split(raw)
    if not isinstance(raw, list | tuple):
        raise ValueError
    out: list[AccountConfig] = []
    for n, item in enumerate(raw):
        if isinstance(item, str):
            name, sep, token_env = item.partition("=")
            fields: dict[str, Any] = {"name": name.strip()}
            if sep:
                fields["token_env"] = token_env.strip()
        elif isinstance(item, Mapping):
            fields = dict(item)
            for key, value in fields.items():
                kind = _ACCOUNT_FIELDS.get(key)
                if kind is None:
                    raise _BadValue(
                        f"account [{n}]: unknown field {key!r} (the fields are "
                        + ", ".join(_ACCOUNT_FIELDS)
                        + ")"
                    )
                if not isinstance(value, str) or not value.strip():
                    raise _BadValue(f"account [{n}]: {key} must be a non-empty string")
                if kind is Path:
                    fields[key] = Path(value).expanduser()
            if "name" not in fields:
                raise _BadValue(f"account [{n}] has no name")
        else:
            raise ValueError
        try:
            out.append(AccountConfig(**fields))
        except ValueError as exc:
            raise _BadValue(f"account [{n}]: {exc}") from None
    return tuple(out)


def _check_accounts(key: str, accounts: tuple[AccountConfig, ...], source: str) -> None:
    backend = key.split(".", 1)[0]
    for account in accounts:
        where = f"{key}: account {account.name!r} (from {source})"
        given = [f for f in ("token", "token_env", "token_file") if getattr(account, f) is not None]
        if backend == "claude" and len(given) != 1:
            raise ConfigError(
                f"{where}: give its login as exactly one of token, token_env (the name of an "
                "environment variable holding its CLAUDE_CODE_OAUTH_TOKEN) or token_file"
                + (f"; got {' and '.join(given)}" if given else "")
            )
        if backend != "claude" and given:
            raise ConfigError(
                f"{where}: a {backend} account has no token: its login is made with "
                f"`clibridge login {backend} --account {account.name}`"
            )
        if account.token_env is not None and not _ENV_NAME.fullmatch(account.token_env):
            raise ConfigError(
                f"{where}: token_env {account.token_env!r} is not an environment variable name"
            )


# --------------------------------------------------------------------------- sources


@attrs.frozen
class _Raw:
    value: Any
    source: str
    from_text: bool


def _flatten_toml(data: Mapping[str, Any], prefix: str, source: str, out: dict[str, _Raw]) -> None:
    known = _by_key()
    for name, value in data.items():
        key = prefix + name
        if key == "models" or (key in known and not isinstance(value, dict)):
            if key not in known:
                raise ConfigError(f"unknown setting {key!r} in {source}")
            out[key] = _Raw(value, f"{source}", False)
        elif isinstance(value, dict) and any(k.startswith(key + ".") for k in known):
            _flatten_toml(value, key + ".", source, out)
        else:
            raise ConfigError(f"unknown setting {key!r} in {source}")


def _from_file(path: Path) -> dict[str, _Raw]:
    source = f"file {path}"
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    out: dict[str, _Raw] = {}
    _flatten_toml(data, "", source, out)
    return out


def _from_env(environ: Mapping[str, str]) -> dict[str, _Raw]:
    names: dict[str, str] = {}
    for s in settings():
        for name in s.env:
            names[name] = s.key
    names["CLIBRIDGE_API_KEY"] = "server.auth_token"
    out: dict[str, _Raw] = {}
    for name, value in environ.items():
        if not name.startswith("CLIBRIDGE_"):
            continue
        key = names.get(name)
        if key is None:
            if not name.startswith(_FOREIGN_ENV_PREFIXES):
                log.warning(
                    "ignoring unknown environment variable %s (not a clibridge setting)", name
                )
            continue
        if key in out and name == "CLIBRIDGE_API_KEY":
            continue  # CLIBRIDGE_AUTH_TOKEN wins over its alias
        out[key] = _Raw(value, f"env {name}", True)
    return out


def _from_flags(flags: Mapping[str, Any]) -> dict[str, _Raw]:
    known = _by_key()
    out: dict[str, _Raw] = {}
    for key, value in flags.items():
        if value is None:
            continue
        setting = known.get(key)
        if setting is None:
            raise ConfigError(f"unknown setting {key!r} given as a flag")
        out[key] = _Raw(value, f"flag {setting.flag}", isinstance(value, str))
    return out


def _read_token_file(raw: _Raw, setting: Setting) -> _Raw:
    try:
        path = _coerce(raw.value, Path, from_text=raw.from_text)
    except ValueError:
        raise ConfigError(
            f"server.auth_token_file (from {raw.source}): expected a file path"
        ) from None
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"cannot read the auth token file {path} (from {raw.source}): {exc}"
        ) from None
    token = text.strip().splitlines()[0].strip() if text.strip() else ""
    if not token:
        raise ConfigError(f"the auth token file {path} (from {raw.source}) is empty")
    return _Raw(token, f"{raw.source} ({path})", False)


def _resolve(layers: list[dict[str, _Raw]]) -> dict[str, _Raw]:
    """Merge the layers (lowest first) into ``{real key: raw}``, expanding aliases."""
    known = _by_key()
    merged: dict[str, _Raw] = {}
    for layer in layers:
        # aliases first so that a specific key of the same layer overrides them
        for key, raw in sorted(layer.items(), key=lambda kv: not known[kv[0]].is_alias):
            setting = known[key]
            if key == "server.auth_token_file":
                raw = _read_token_file(raw, setting)
            if key == "models" and "models" in merged:
                # merge per alias so a flag can add one model without repeating the file's
                try:
                    base = _coerce(
                        merged["models"].value, dict[str, str], from_text=merged["models"].from_text
                    )
                    extra = _coerce(raw.value, dict[str, str], from_text=raw.from_text)
                except ValueError:
                    pass
                else:
                    raw = _Raw({**base, **extra}, raw.source, False)
            for target in setting.targets or (key,):
                merged[target] = raw
    return merged


# --------------------------------------------------------------------------- loading


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` only accepts local connections."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name that resolves to who knows what: treat as exposed


def _check(setting: Setting, value: Any, raw: _Raw) -> None:
    if setting.key.endswith(".accounts"):
        _check_accounts(setting.key, value, raw.source)
        where = f"{setting.key} (from {raw.source})"  # never quote a token
    else:
        where = f"{setting.key} = {raw.value!r} (from {raw.source})"
    if setting.validator is not None:
        # the validators of _config read only ``attr.name``
        field = types.SimpleNamespace(name=setting.key.rsplit(".", 1)[-1])
        try:
            setting.validator(None, field, value)
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}") from None
    if setting.key == "server.port" and not 0 <= value <= 65535:
        raise ConfigError(f"{where}: a port is between 0 and 65535")
    if setting.key == "server.host" and not value.strip():
        raise ConfigError(f"{where}: the host must not be empty")
    if setting.key == "server.auth_token" and value is not None and not value.strip():
        raise ConfigError(f"{where}: the auth token must not be empty (unset it instead)")
    if setting.key == "log_level" and value not in LOG_LEVELS:
        raise ConfigError(f"{where}: expected one of {', '.join(LOG_LEVELS)}")
    if setting.key == "models":
        from ._models import parse_target

        for alias, target in value.items():
            try:
                parse_target(alias, target)
            except ValueError as exc:
                raise ConfigError(f"{exc} (from {raw.source})") from None
    if setting.key.endswith(".command") and not value:
        raise ConfigError(f"{where}: the command must not be empty")
    if setting.key.endswith(".pass_env"):
        for name in value:
            if not _ENV_NAME.fullmatch(name):
                raise ConfigError(
                    f"{where}: {name!r} is not an environment variable name "
                    "(give each name on its own: --claude-pass-env A --claude-pass-env B, "
                    "or a TOML list)"
                )


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_converter = cattrs.Converter(forbid_extra_keys=True)
_converter.register_structure_hook(Path, lambda v, _: Path(v))
# accounts arrive as AccountConfig already (built and checked by _coerce_accounts)
_converter.register_structure_hook(AccountConfig, lambda v, _: v)


def _nest(values: Mapping[str, Any]) -> dict[str, Any]:
    nested: dict[str, Any] = {}
    for key, value in values.items():
        *parents, leaf = key.split(".")
        node = nested
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = list(value) if isinstance(value, tuple) else value
    return nested


def load_config(
    argv_flags: Mapping[str, Any],
    environ: Mapping[str, str],
    file: Path | None,
    *,
    check_auth: bool = True,
) -> Config:
    """The effective :class:`Config` from defaults < ``file`` < ``environ`` < ``argv_flags``.

    ``argv_flags`` maps setting keys (``"server.port"``, ``"pool.workers"``,
    ``"server.auth_token_file"``; see :func:`settings`) to values, typed or as strings;
    None means "not given". ``file`` falls back to ``environ["CLIBRIDGE_CONFIG"]``.
    Raises :class:`ConfigError` with a message naming the setting and its source.
    ``check_auth=False`` skips the check that a non-loopback server has an auth token or
    a named key (for commands that do not serve, like ``keys add`` making the first key).
    """
    if file is None and environ.get("CLIBRIDGE_CONFIG"):
        file = Path(environ["CLIBRIDGE_CONFIG"]).expanduser()
    layers = [
        _from_file(file) if file is not None else {},
        _from_env(environ),
        _from_flags(argv_flags),
    ]
    merged = _resolve(layers)
    known = _by_key()
    values: dict[str, Any] = {}
    for key, raw in merged.items():
        setting = known[key]
        if key in SECRET_KEYS and isinstance(raw.value, str) and not raw.value.strip():
            # an empty secret is a mistake, never a way to say "no auth"
            raise ConfigError(
                f"{key} (from {raw.source}): the auth token must not be empty (unset it instead)"
            )
        try:
            value = _coerce(
                raw.value, setting.type, from_text=raw.from_text and key not in SECRET_KEYS
            )
        except _BadValue as exc:
            raise ConfigError(f"{key} (from {raw.source}): {exc}") from None
        except ValueError:
            shown = "" if key.endswith(".accounts") else f" = {raw.value!r}"  # tokens
            raise ConfigError(
                f"{key}{shown} (from {raw.source}): expected {_describe(setting.type)}"
            ) from None
        _check(setting, value, raw)
        values[key] = value
    try:
        config = _converter.structure(_nest(values), Config)
    except (
        cattrs.BaseValidationError,
        ValueError,
        TypeError,
    ) as exc:  # pragma: no cover - checked above
        raise ConfigError(f"invalid configuration: {exc}") from None
    for section_name in ("claude", "codex"):
        section = getattr(config, section_name)
        if section.accounts and section.use_real_home:
            raise ConfigError(
                f"{section_name}.accounts and {section_name}.use_real_home do not go together: "
                "each account runs in a spawn home of its own"
            )
    server = config.server
    if check_auth and not is_loopback(server.host) and server.auth_token is None:
        from ._keys import has_keys
        from ._state_dir import default_state_dir

        if not has_keys(config.state_dir or default_state_dir()):
            raise ConfigError(
                f"refusing to listen on {server.host!r} without an auth token or a named key: "
                "anyone who can reach it could use your CLI subscription. Set a token with "
                "--auth-token-file FILE, CLIBRIDGE_API_KEY or [server] auth_token, add a key "
                "with `clibridge keys add NAME`, or bind 127.0.0.1."
            )
    if config.claude.tui and not is_loopback(server.host) and not config.claude.tui_trusted_network:
        raise ConfigError(
            f"refusing --tui on {server.host!r}: whoever reaches it drives interactive claude "
            "sessions logged in as you, and the panes show every prompt. Bind 127.0.0.1, or "
            "pass --claude-tui-trusted-network if the network is yours."
        )
    return config


# --------------------------------------------------------------------------- printing


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, Path):
        value = str(value)
    if isinstance(value, str):
        import json

        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


def _toml_key(name: str) -> str:
    import re

    return name if re.fullmatch(r"[A-Za-z0-9_-]+", name) else _toml_value(name)


def dump_toml(config: Config, *, redact: bool = True) -> str:
    """``config`` as a TOML document ``load_config`` reads back; secrets redacted."""
    tables: dict[str, list[str]] = {"": []}
    array_tables: list[str] = []
    for s in settings():
        if s.is_alias:
            continue
        value: Any = config
        for part in s.key.split("."):
            value = getattr(value, part)
        table, _, name = s.key.rpartition(".")
        lines = tables.setdefault(table, [])
        if s.key == "models":
            tables.setdefault("models", [])
            tables["models"].extend(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items())
            continue
        if s.key.endswith(".accounts"):
            for account in value:
                array_tables.extend(("", f"[[{s.key}]]"))
                array_tables.extend(_account_lines(account, redact=redact))
            continue
        if value is None:
            lines.append(f"# {name} = (unset)")
        elif redact and s.key in SECRET_KEYS:
            lines.append(f'{name} = "<redacted>"')
        else:
            lines.append(f"{name} = {_toml_value(value)}")
    out: list[str] = list(tables.pop(""))
    for table, lines in tables.items():
        out.append("")
        out.append(f"[{table}]")
        out.extend(lines)
    out.extend(array_tables)
    return "\n".join(out) + "\n"


def _account_lines(account: AccountConfig, *, redact: bool) -> list[str]:
    lines = [f"name = {_toml_value(account.name)}"]
    for name in ("token", "token_env", "token_file"):
        value = getattr(account, name)
        if value is None:
            continue
        shown = '"<redacted>"' if redact and name == "token" else _toml_value(value)
        lines.append(f"{name} = {shown}")
    return lines
