"""The command line: ``clibridge serve | config | doctor | login | keys | openclaw-config |
litellm-config | version`` (and ``inspect`` / ``usage`` for the request ledger).

Every setting of :class:`~clibridge._config.Config` is a flag of ``serve`` and ``config``,
generated from :func:`clibridge._config_load.settings` so none is forgotten; the flags
only say what was given, :func:`~clibridge._config_load.load_config` decides the rest.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args, get_origin

from . import __version__, _ledger_cli
from ._backends import BACKENDS, account_state_dir
from ._config import Config
from ._config_load import LOG_LEVELS, ConfigError, Setting, dump_toml, load_config, settings

if TYPE_CHECKING:
    from ._keys import KeyRecord

_GROUPS = {
    "server": "HTTP server",
    "top": "backends, models, logging",
    "pool": "pools (both backends; --claude-* / --codex-* set one)",
    # one group per backend's config section
    **{name: f"{name} backend" for name in BACKENDS},
}

_ENV_EPILOG = """\
Every flag also has an environment variable: CLIBRIDGE_ + the flag name in upper case
(--port -> CLIBRIDGE_PORT, --claude-workers -> CLIBRIDGE_CLAUDE_WORKERS), or the setting's
dotted TOML key with __ (CLIBRIDGE_CLAUDE__POOL__WORKERS). The auth token may also come from
CLIBRIDGE_API_KEY. Precedence: defaults < TOML file (--config / CLIBRIDGE_CONFIG) <
environment < flags. `clibridge config` prints the effective configuration as TOML.
"""


def _group_of(setting: Setting) -> str:
    head = setting.key.split(".", 1)[0]
    if head in ("server", "pool") or head in BACKENDS:
        return head
    if setting.is_alias:
        return "pool"
    return "top"


def _metavar(tp: Any) -> str | None:
    inner = tp
    if get_origin(tp) in (typing.Union, types.UnionType):
        inner = next(a for a in get_args(tp) if a is not type(None))
    if inner is int:
        return "N"
    if inner is float:
        return "SECONDS"
    if inner is Path:
        return "PATH"
    return None


def _add_setting_flags(parser: argparse.ArgumentParser) -> None:
    groups = {name: parser.add_argument_group(title) for name, title in _GROUPS.items()}
    for s in settings():
        inner = s.type
        origin = get_origin(inner)
        default_note = "" if s.is_alias or s.default is None else f" [default: {_show(s)}]"
        env_note = f" (env {s.env[0]})"
        help_text = (s.help or s.key) + default_note + env_note
        kwargs: dict[str, Any] = {
            "dest": s.key,
            "default": None,
            "help": help_text.replace("%", "%%"),
        }
        if inner is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif origin is Literal:
            kwargs["choices"] = list(get_args(inner))
        elif s.key == "models":
            kwargs.update(action="append", metavar="ALIAS=TARGET")
        elif s.key.endswith(".accounts"):
            metavar = "NAME=TOKEN_ENV" if s.key.startswith("claude.") else "NAME"
            kwargs.update(action="append", metavar=metavar)
        elif origin is tuple and not s.key.endswith(".command"):
            kwargs.update(action="append", metavar="VALUE")
        elif origin is tuple:
            kwargs["metavar"] = '"PROGRAM ARGS"'
        elif s.key == "log_level":
            kwargs["choices"] = list(LOG_LEVELS)
        else:
            unit = (
                "DAYS"
                if s.key.endswith("_days")
                else "PERCENT"
                if s.key.endswith("usage_warning")
                else None
            )
            kwargs["metavar"] = unit or _metavar(inner) or s.key.rsplit(".", 1)[-1].upper()
        groups[_group_of(s)].add_argument(s.flag, **kwargs)


def _show(s: Setting) -> str:
    if isinstance(s.default, tuple):
        return " ".join(s.default)
    return str(s.default)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="clibridge",
        description="Serve the claude and codex coding-agent CLIs as a local "
        "OpenAI / Anthropic compatible model API.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, text in (
        ("serve", "run the server (pools of CLI workers behind the HTTP API)"),
        ("config", "print the effective configuration as TOML (secrets redacted)"),
        ("doctor", "check the CLIs, logins, state dir, port and settings; say what to fix"),
    ):
        p = sub.add_parser(
            name,
            help=text,
            description=text,
            epilog=_ENV_EPILOG,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        p.add_argument(
            "--config", type=Path, metavar="PATH", help="TOML config file (env CLIBRIDGE_CONFIG)"
        )
        if name == "serve":
            p.add_argument(
                "--tui",
                action="store_true",
                help="run claude workers as interactive sessions in tmux panes (docs/tui.md; "
                "same as --claude-tui)",
            )
        elif name == "doctor":
            p.add_argument("--tui", action="store_true", help="check as for serve --tui (tmux too)")
            p.add_argument(
                "--show-config",
                action="store_true",
                help="also print the configuration as loaded (as `clibridge config` does)",
            )
        _add_setting_flags(p)
    sub.add_parser("version", help="print the version")
    login = sub.add_parser(
        "login",
        help="log a CLI in for clibridge (codex: runs `codex login` in clibridge's CODEX_HOME)",
    )
    login.add_argument("backend", choices=[n for n, b in BACKENDS.items() if b.login is not None])
    login.add_argument("--config", type=Path, metavar="PATH", help="TOML config file")
    login.add_argument(
        "--state-dir",
        type=Path,
        metavar="PATH",
        help="clibridge's state dir: use the same as `serve` (env CLIBRIDGE_STATE_DIR)",
    )
    login.add_argument(
        "--account",
        metavar="NAME",
        help="log in this configured account ([[<backend>.accounts]] name = NAME) in its own "
        "spawn home",
    )
    login.add_argument(
        "cli_args", nargs=argparse.REMAINDER, help="passed to `codex login` (e.g. --device-auth)"
    )
    _add_keys_parser(sub)
    tui = sub.add_parser("tui", help="watch the panes of `serve --tui` (ls, attach N read-only)")
    tui.add_argument("action", choices=("ls", "attach"))
    tui.add_argument("worker", nargs="?", type=int, help="attach: the worker number `ls` shows")
    tui.add_argument("--config", type=Path, metavar="PATH", help="TOML config file")
    tui.add_argument("--state-dir", type=Path, metavar="PATH", help="the state dir of `serve`")
    oc = sub.add_parser(
        "openclaw-config",
        help="print the OpenClaw provider block for a running clibridge, or merge it into "
        "an OpenClaw config file",
        description="Ask a running clibridge for its models and print OpenClaw's provider "
        "block (models.providers.clibridge), or merge it into OpenClaw's config with --write "
        "(the old file is copied to FILE.bak-<time> first).",
    )
    oc.add_argument(
        "--api",
        choices=("openai-completions", "openai-responses", "anthropic-messages"),
        default="openai-completions",
        help="the API OpenClaw speaks to clibridge [default: openai-completions]",
    )
    oc.add_argument("--url", help="the running clibridge [default: from the config's host/port]")
    oc.add_argument(
        "--key",
        help="the key OpenClaw sends [default: the server's auth token, else a placeholder "
        "(no auth on loopback)]",
    )
    oc.add_argument(
        "--write",
        type=Path,
        metavar="FILE",
        help="merge into this OpenClaw config (e.g. ~/.openclaw/openclaw.json)",
    )
    oc.add_argument("--config", type=Path, metavar="PATH", help="clibridge's TOML config file")
    _ledger_cli.add_commands(sub)
    ll = sub.add_parser(
        "litellm-config",
        help="print a LiteLLM proxy config.yaml that spreads requests over several clibridge "
        "instances (docs/scale-out.md)",
        description="Print LiteLLM's config.yaml: every model with one deployment per "
        "instance, retries and cooldown on 429 / 503, timeouts for long agent turns, session "
        "affinity. With --out DIR write it there, with a /readyz probe callback.",
    )
    ll.add_argument(
        "--instance",
        action="append",
        required=True,
        metavar="URL",
        help="a clibridge instance (http://host:port); repeat for each",
    )
    ll.add_argument(
        "--key",
        help="the instances' API key, written into the file [default: LiteLLM reads "
        "CLIBRIDGE_API_KEY from its environment]",
    )
    ll.add_argument(
        "--backend",
        action="append",
        choices=list(BACKENDS),
        help="only this backend's models [default: all]",
    )
    ll.add_argument(
        "--cooldown",
        type=float,
        metavar="SECONDS",
        help="how long LiteLLM leaves out an instance that failed [default: 10]",
    )
    ll.add_argument(
        "--routing",
        choices=("simple-shuffle", "least-busy"),
        default="simple-shuffle",
        help="LiteLLM's routing strategy for requests no session pins [default: simple-shuffle]",
    )
    ll.add_argument(
        "--out", type=Path, metavar="DIR", help="write DIR/config.yaml and the callback"
    )
    ll.add_argument("--config", type=Path, metavar="PATH", help="clibridge's TOML config file")
    return parser


def _add_keys_parser(sub: Any) -> None:
    keys = sub.add_parser(
        "keys",
        help="named API keys with quotas: add, list, set, revoke (a running server follows "
        "at once)",
        description="Named API keys, stored hashed in the state dir (keys.sqlite3). A key is "
        "shown once, when it is made. Once any named key exists, every request needs a key "
        "(a named one or the --auth-token).",
    )
    keys_sub = keys.add_subparsers(dest="keys_command", metavar="ACTION")
    keys_sub.required = True
    add = keys_sub.add_parser("add", help="make a key and print it (once)")
    add.add_argument("name", help="the key's name (letters, digits, '.', '_', '-')")
    for flag, text in _QUOTA_FLAGS:
        add.add_argument(flag, type=int, metavar="N", help=f"quota: {text} [default: unlimited]")
    add.add_argument(
        "--admin", action="store_true", help="an admin key: /metrics and every key's usage"
    )
    keys_sub.add_parser("list", help="the keys, their quotas and today's tokens")
    change = keys_sub.add_parser(
        "set",
        help="change a key's quotas (the key stays the same; a running server follows)",
        description="Change the quotas of the key NAME. A quota not named stays as it is; "
        "'none' makes it unlimited.",
    )
    change.add_argument("name")
    for flag, text in _QUOTA_FLAGS:
        change.add_argument(
            flag, type=_quota_value, metavar="N|none", help=f"quota: {text} ('none': unlimited)"
        )
    revoke = keys_sub.add_parser("revoke", help="delete a key (a running server refuses it)")
    revoke.add_argument("name")
    for p in (keys, *keys_sub.choices.values()):
        p.add_argument("--config", type=Path, metavar="PATH", help="TOML config file")
        p.add_argument(
            "--state-dir",
            type=Path,
            metavar="PATH",
            help="clibridge's state dir: use the same as `serve` (env CLIBRIDGE_STATE_DIR)",
        )


#: the quota flags of ``keys add`` and ``keys set``: (flag, what it limits)
_QUOTA_FLAGS = (
    ("--concurrency", "requests in flight at once"),
    ("--rpm", "requests per minute (sliding window)"),
    ("--daily-tokens", "tokens (input, cache and output) per UTC day"),
)


class _Unlimited:
    """``keys set --rpm none``: take the quota away (distinct from a flag not given)."""


_UNLIMITED = _Unlimited()


def _quota_value(text: str) -> int | _Unlimited:
    if text.strip().lower() == "none":
        return _UNLIMITED
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number or 'none': {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"at least 1, not {value} ('none': unlimited)")
    return value


def _quota_changes(args: argparse.Namespace) -> dict[str, int | None]:
    """The quotas ``keys set`` names, by field (None: unlimited); the others are absent."""
    changes: dict[str, int | None] = {}
    for flag, _ in _QUOTA_FLAGS:
        field = flag.removeprefix("--").replace("-", "_")
        value = getattr(args, field)
        if value is not None:
            changes[field] = None if isinstance(value, _Unlimited) else value
    return changes


def _keys(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    from ._keys import KeysError, KeyStore, Quotas, today
    from ._supervisor import state_dir

    flags = {"state_dir": args.state_dir} if args.state_dir is not None else {}
    # the first key of a server off loopback is made before that server can start
    home = state_dir(load_config(flags, environ, args.config, check_auth=False))
    try:
        store = KeyStore.open(home)
        try:
            if args.keys_command == "add":
                quotas = Quotas(args.concurrency, args.rpm, args.daily_tokens)
                key = store.add(args.name, quotas, admin=args.admin)
                print(
                    f"clibridge: made key {args.name!r} (shown this once: store it now)",
                    file=sys.stderr,
                )
                print(key)
            elif args.keys_command == "set":
                changes = _quota_changes(args)
                if not changes:
                    raise KeysError(
                        "name a quota to change: --concurrency, --rpm or --daily-tokens "
                        "(N, or 'none' for unlimited)"
                    )
                quotas = store.set_quotas(args.name, changes)
                now = ", ".join(
                    f"{what} {'unlimited' if value is None else value}"
                    for what, value in (
                        ("concurrency", quotas.concurrency),
                        ("rpm", quotas.rpm),
                        ("daily tokens", quotas.daily_tokens),
                    )
                )
                print(f"clibridge: key {args.name!r} now: {now}", file=sys.stderr)
            elif args.keys_command == "revoke":
                store.revoke(args.name)
                print(f"clibridge: revoked key {args.name!r}", file=sys.stderr)
            else:
                used = store.tokens_on(today())
                print(_keys_table(store.records(), used))
        finally:
            store.close()
    except KeysError as exc:
        print(f"clibridge: error: {exc}", file=sys.stderr)
        return 1
    return 0


def _keys_table(records: Sequence[KeyRecord], used: Mapping[str, int]) -> str:
    from datetime import UTC, datetime

    def limit(value: int | None) -> str:
        return "-" if value is None else str(value)

    rows = [("NAME", "KEY", "ADMIN", "CONCURRENCY", "RPM", "DAILY TOKENS", "TODAY", "CREATED")]
    for r in records:
        created = datetime.fromtimestamp(r.created, UTC).strftime("%Y-%m-%d %H:%M")
        rows.append(
            (
                r.name,
                r.shown + "...",
                "yes" if r.admin else "no",
                limit(r.quotas.concurrency),
                limit(r.quotas.rpm),
                limit(r.quotas.daily_tokens),
                str(used.get(r.name, 0)),
                created,
            )
        )
    if len(rows) == 1:
        return "no named keys (clibridge keys add NAME)"
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    )


def _openclaw_config(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    from . import _openclaw

    config = load_config({}, environ, args.config)
    host = config.server.host
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1"
    url = args.url or f"http://{'[' + host + ']' if ':' in host else host}:{config.server.port}"
    key = args.key or config.server.auth_token
    try:
        models = _openclaw.fetch_models(url, key)
        block = _openclaw.provider_block(url, args.api, key or "clibridge-local", models)
        if args.write is None:
            print(
                json.dumps(
                    {"models": {"mode": "merge", "providers": {_openclaw.PROVIDER: block}}},
                    indent=2,
                )
            )
            return 0
        backup = _openclaw.write_merged(args.write.expanduser(), block)
    except _openclaw.OpenClawConfigError as exc:
        print(f"clibridge: error: {exc}", file=sys.stderr)
        return 2
    saved = f" (the old one is {backup})" if backup else ""
    print(
        f"clibridge: wrote provider {_openclaw.PROVIDER!r} ({len(block['models'])} models, "
        f"{args.api} at {block['baseUrl']}) into {args.write}{saved}",
        file=sys.stderr,
    )
    return 0


def _litellm_config(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    from . import _litellm

    config = load_config({}, environ, args.config)
    backends = args.backend or list(BACKENDS)
    # the instances are set up like this one: LiteLLM outwaits their longest turn
    turn_timeout = max(BACKENDS[b].settings(config).pool.turn_timeout for b in backends)
    try:
        data = _litellm.build_config(
            args.instance,
            key=args.key,
            models=_litellm.model_names(backends),
            turn_timeout=turn_timeout,
            cooldown=_litellm.COOLDOWN if args.cooldown is None else args.cooldown,
            routing=args.routing,
            readyz_callback=args.out is not None,
        )
        text = _litellm.to_yaml(
            data, header=_litellm.header_for(args.instance, readyz_callback=args.out is not None)
        )
    except _litellm.LiteLLMConfigError as exc:
        print(f"clibridge: error: {exc}", file=sys.stderr)
        return 2
    if args.out is None:
        sys.stdout.write(text)
        return 0
    written = _litellm.write_config(args.out, text)
    print(f"clibridge: wrote {', '.join(map(str, written))}", file=sys.stderr)
    return 0


def _tui(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    """``clibridge tui ls`` / ``clibridge tui attach N`` (see _backends/tui/cli.py)."""
    from ._backends.tui.cli import tui_command
    from ._supervisor import state_dir

    if args.action == "attach" and args.worker is None:
        print(
            "clibridge: error: tui attach needs the worker number `tui ls` shows", file=sys.stderr
        )
        return 2
    flags = {"state_dir": args.state_dir} if args.state_dir is not None else {}
    try:
        config = load_config(flags, environ, args.config)
    except ConfigError as exc:
        print(f"clibridge: error: {exc}", file=sys.stderr)
        return 2
    return tui_command(args.action, args.worker, state_dir(config), environ, sys.stdout, sys.stderr)


def _login(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    """Run the CLI's own login with the spawn home clibridge's workers use."""
    import subprocess

    from ._process import CHILD_UMASK
    from ._supervisor import state_dir

    # our own options may also come after the backend name; the rest is the CLI's
    cli_args = list(args.cli_args)
    for name in ("--state-dir", "--config", "--account"):
        for i, arg in enumerate(cli_args):
            value = None
            if arg == name and i + 1 < len(cli_args):
                value = cli_args[i + 1]
                del cli_args[i : i + 2]
            elif arg.startswith(name + "="):
                value = arg.split("=", 1)[1]
                del cli_args[i]
            if value is not None:
                key = name[2:].replace("-", "_")
                setattr(args, key, value if key == "account" else Path(value))
                break
    args.cli_args = cli_args
    flags = {"state_dir": args.state_dir} if args.state_dir is not None else {}
    config = load_config(flags, environ, args.config)
    served_by = BACKENDS[args.backend]
    login = served_by.login
    assert login is not None  # the parser offers only backends with a login
    home = state_dir(config)
    if args.account is not None:
        names = [a.name for a in served_by.accounts(config)]
        if args.account not in names:
            print(
                f"clibridge: error: no {args.backend} account {args.account!r} in the "
                f"configuration (configured: {', '.join(names) or 'none'}); add it first:\n"
                f'  [[{args.backend}.accounts]]\n  name = "{args.account}"',
                file=sys.stderr,
            )
            return 2
        home = account_state_dir(home, args.account)
    command = login(config, home, environ, args.cli_args)
    argv = command.argv
    print(f"clibridge: {command.note}", file=sys.stderr)
    try:
        # umask 077 like every CLI child: the login it writes is the user's alone
        return subprocess.call(
            list(argv), env=dict(command.env), cwd=command.cwd, umask=CHILD_UMASK
        )
    except OSError as exc:
        print(f"clibridge: error: cannot run {argv[0]!r}: {exc}", file=sys.stderr)
        return 2


def _run_doctor(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    from . import _doctor

    if args.tui:
        setattr(args, "claude.tui", True)  # as serve --tui: the claude.tui setting
    try:
        config: Config | ConfigError = _load(args, environ)
    except ConfigError as exc:
        config = exc
    findings = _doctor.run_doctor(config, environ, tui=args.tui)
    if args.show_config and isinstance(config, Config):
        sys.stdout.write("# the configuration as loaded\n" + dump_toml(config) + "\n")
    sys.stdout.write(_doctor.render(findings))
    return _doctor.exit_code(findings)


def flags_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The settings given on the command line, keyed like :func:`settings` (unset ones dropped)."""
    out: dict[str, Any] = {}
    for s in settings():
        value = getattr(args, s.key, None)
        if value is None:
            continue
        if isinstance(value, list) and s.key != "models":
            value = tuple(value)
        out[s.key] = value
    return out


def _load(args: argparse.Namespace, environ: Mapping[str, str]) -> Config:
    return load_config(flags_from_args(args), environ, args.config)


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Entry point of the ``clibridge`` command; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    env = os.environ if environ is None else environ
    if args.command == "version":
        print(f"clibridge {__version__}")
        return 0
    if args.command == "tui":
        return _tui(args, env)
    commands = {
        "login": _login,
        "openclaw-config": _openclaw_config,
        "litellm-config": _litellm_config,
        "keys": _keys,
    }
    if args.command in commands:
        try:
            return commands[args.command](args, env)
        except ConfigError as exc:
            print(f"clibridge: error: {exc}", file=sys.stderr)
            return 2
    if args.command == "doctor":
        return _run_doctor(args, env)
    if args.command in ("inspect", "usage"):
        from ._supervisor import state_dir

        try:
            flags = {"state_dir": args.state_dir} if args.state_dir is not None else {}
            config = load_config(flags, env, args.config)
        except ConfigError as exc:
            print(f"clibridge: error: {exc}", file=sys.stderr)
            return 2
        return _ledger_cli.run(args, state_dir(config))
    if getattr(args, "tui", False):
        setattr(args, "claude.tui", True)
    try:
        config = _load(args, env)
    except ConfigError as exc:
        print(f"clibridge: error: {exc}", file=sys.stderr)
        return 2
    if args.command == "config":
        sys.stdout.write(dump_toml(config))
        return 0
    from ._logging import setup_logging

    setup_logging(config.log_level, config.log_format)
    # imported late: `clibridge config` and `--help` must not pay for the server stack
    supervisor = importlib.import_module("clibridge._supervisor")
    exit_code: int = supervisor.run(config)
    return exit_code
