"""``clibridge inspect`` and ``clibridge usage``: the request ledger as terminal tables.

Both read the ledger file under the state dir directly (:mod:`clibridge._ledger`): the
server need not run, and a running one is not disturbed (WAL lets readers in). The ledger
(and with it the HTTP stack) is imported only when a command runs: ``clibridge --help``
and ``clibridge config`` must not pay for it.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from ._ledger import Ledger

#: ``--by`` of ``clibridge usage`` (:data:`clibridge._ledger.USAGE_BY`)
USAGE_BY = ("model", "key", "day", "hour")

_RECENT_COLUMNS = (
    ("time", "started"),
    ("request id", "request_id"),
    ("status", "status"),
    ("error", "error_type"),
    ("endpoint", "endpoint"),
    ("model", "model"),
    ("worker", "worker"),
    ("in", "input_tokens"),
    ("out", "output_tokens"),
    ("cache r/w", "cache"),
    ("ttfc ms", "ttfc_ms"),
    ("ms", "ms"),
    ("key", "key"),
)
_USAGE_COLUMNS = (
    ("requests", "requests"),
    ("errors", "errors"),
    ("input", "input_tokens"),
    ("output", "output_tokens"),
    ("cache read", "cache_read_tokens"),
    ("cache write", "cache_write_tokens"),
    ("total", "total_tokens"),
)


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``inspect`` and ``usage`` sub-commands."""
    inspect = sub.add_parser(
        "inspect",
        help="show one request from the ledger (row and captured exchange), or the last N",
        description="Read the request ledger under the state dir (the server need not run).",
    )
    inspect.add_argument("request_id", nargs="?", metavar="ID", help="a request id")
    inspect.add_argument("--last", type=int, metavar="N", help="the last N requests")
    inspect.add_argument("--errors", action="store_true", help="with --last: only failed requests")
    _common(inspect)
    usage = sub.add_parser(
        "usage",
        help="token usage from the ledger, grouped by model, key, day or hour",
        description="Read the request ledger under the state dir (the server need not run).",
    )
    usage.add_argument(
        "--since", default="7d", help="how far back: 7d, 12h, 30m, 1w, seconds [default: 7d]"
    )
    usage.add_argument("--by", choices=USAGE_BY, default="model", help="[default: model]")
    usage.add_argument("--key", help="only this key's requests")
    _common(usage)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, metavar="PATH", help="TOML config file")
    parser.add_argument(
        "--state-dir",
        type=Path,
        metavar="PATH",
        help="clibridge's state dir: the same as `serve` (env CLIBRIDGE_STATE_DIR)",
    )
    parser.add_argument("--json", action="store_true", help="JSON instead of a table")


def run(args: argparse.Namespace, state_dir: Path, out: TextIO | None = None) -> int:
    """Run ``inspect`` or ``usage`` against the ledger in ``state_dir`` (to stdout)."""
    from ._ledger import Ledger, ledger_path

    out = out or sys.stdout
    ledger = Ledger(ledger_path(state_dir))
    try:
        if args.command == "usage":
            return _usage(ledger, args, out)
        return _inspect(ledger, args, out)
    except FileNotFoundError as exc:
        print(f"clibridge: error: {exc}", file=sys.stderr)
        return 1


def _inspect(ledger: Ledger, args: argparse.Namespace, out: TextIO) -> int:
    if (args.request_id is None) == (args.last is None):
        print("clibridge: error: inspect takes a request ID or --last N", file=sys.stderr)
        return 2
    if args.request_id is not None:
        row = ledger.get(args.request_id)
        if row is None:
            print(
                f"clibridge: error: no request {args.request_id!r} in the ledger", file=sys.stderr
            )
            return 1
        if args.json:
            out.write(json.dumps(row, indent=2, ensure_ascii=False) + "\n")
        else:
            out.write(format_request(row))
        return 0
    rows = ledger.recent(max(1, args.last), errors_only=args.errors)
    if args.json:
        out.write(json.dumps(rows, indent=2, ensure_ascii=False) + "\n")
        return 0
    body = [[_recent_cell(row, name) for _, name in _RECENT_COLUMNS] for row in reversed(rows)]
    out.write(format_table([title for title, _ in _RECENT_COLUMNS], body))
    return 0


def _usage(ledger: Ledger, args: argparse.Namespace, out: TextIO) -> int:
    from ._ledger import parse_duration

    try:
        since = parse_duration(args.since)
    except ValueError as exc:
        print(f"clibridge: error: --since: {exc}", file=sys.stderr)
        return 2
    rows = ledger.usage(since, args.by, args.key)
    if args.json:
        out.write(json.dumps(rows, indent=2, ensure_ascii=False) + "\n")
        return 0
    headers = [args.by, *(title for title, _ in _USAGE_COLUMNS)]
    body = [
        [_text(row[args.by]), *(_number(row[name]) for _, name in _USAGE_COLUMNS)] for row in rows
    ]
    if rows:
        body.append(
            [
                "total",
                *(_number(sum(int(str(row[name])) for row in rows)) for _, name in _USAGE_COLUMNS),
            ]
        )
    out.write(format_table(headers, body))
    return 0


def _recent_cell(row: dict[str, object], name: str) -> str:
    if name == "started":
        return datetime.fromtimestamp(float(str(row["started"]))).strftime("%m-%d %H:%M:%S")
    if name == "model":
        return _text(row["cli_model"] or row["model_asked"])
    if name == "worker":
        if row["backend"] is None:
            return "-"
        flags = "+" if row["continued"] else ""
        return f"{row['backend']}#{row['worker_id']}{flags}"
    if name == "cache":
        if row["cache_read_tokens"] is None:
            return "-"
        return f"{row['cache_read_tokens']}/{row['cache_write_tokens']}"
    if name == "ttfc_ms":
        return _ms(row["ttfc_s"])
    if name == "ms":
        return _ms(row["duration_s"])
    return _text(row[name])


def _ms(value: object) -> str:
    return "-" if value is None else str(round(float(str(value)) * 1000))


def _text(value: object) -> str:
    from ._http._logsafe import escape_controls

    # a client chose the model name and the request id: no terminal escapes from them
    return "-" if value is None or value == "" else escape_controls(str(value))


def _number(value: object) -> str:
    return f"{int(str(value)):,}"


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns padded to their widest cell; numbers right-aligned."""
    if not rows:
        return "(no requests)\n"
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            cell.rjust(w) if _numeric(cell) else cell.ljust(w)
            for cell, w in zip(cells, widths, strict=True)
        ).rstrip()

    return "\n".join([line(headers), *(line(r) for r in rows)]) + "\n"


def _numeric(cell: str) -> bool:
    return cell.replace(",", "").replace("/", "").isdigit()


def format_request(row: dict[str, object]) -> str:
    """One request: its fields, then its captured exchange when there is one."""
    lines: list[str] = []
    capture = row.get("capture")
    fields = {k: v for k, v in row.items() if k != "capture"}
    width = max(len(k) for k in fields)
    for name, value in fields.items():
        if name == "started":
            value = f"{value} ({datetime.fromtimestamp(float(str(value))).isoformat()})"
        lines.append(f"{name.ljust(width)}  {_text(value)}")
    if isinstance(capture, dict):
        lines.append("")
        lines.append(f"conversation {capture['conversation_id']}")
        messages = capture.get("messages")
        for message in messages if isinstance(messages, list) else []:
            lines.append(_format_message(message, answer=message["id"] == capture["answer_id"]))
    else:
        lines.append("")
        lines.append("(no captured exchange: run the server with --capture metadata or full)")
    return "\n".join(lines) + "\n"


def _format_message(message: dict[str, object], *, answer: bool) -> str:
    head = f"--- {message['role']}{' (answer)' if answer else ''}  {str(message['id'])[:12]}"
    content = message.get("content")
    if content is None:
        return f"{head}  (metadata only: content hash {str(message['content_hash'])[:12]})"
    parts: list[str] = [head]
    for part in json.loads(str(content)):
        kind = part.get("type")
        if kind in ("text", "thinking"):
            parts.append(part["text"] if kind == "text" else f"[thinking] {part['text']}")
        elif kind == "tool_call":
            parts.append(f"[tool call {part['id']}] {part['name']}({part['arguments']})")
        elif kind == "tool_result":
            error = " error" if part.get("is_error") else ""
            parts.append(f"[tool result {part['tool_call_id']}{error}] {part['content']}")
        elif kind == "image":
            parts.append(f"[image {part['media_type']} sha256 {part['sha256'][:12]}]")
    return "\n".join(parts)
