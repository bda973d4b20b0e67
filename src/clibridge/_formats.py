"""JSON response formats: instruct the model, check its reply, phrase the retry (pure).

Theory of operation
-------------------
Neither CLI can constrain its model's decoding to JSON, so ``response_format``
(``json_object`` / ``json_schema``, Chat Completions) and ``text.format`` (Responses) are
honoured in three steps, the last two in the supervisor:

1. :func:`instruction` is appended to the system prompt: reply with JSON only (and the
   schema, when there is one).
2. When the turn ends normally with text, :func:`check` parses it (a reply wrapped in
   one Markdown code fence is unwrapped: models do that despite the instruction) and
   validates it: a JSON object for ``json_object``, the schema with ``jsonschema`` for
   ``json_schema``. The client gets the parsed JSON text, as the model wrote it.
3. On a mismatch the supervisor runs one more turn of the same conversation: the invalid
   reply, then :func:`retry_prompt` naming what was wrong. A second mismatch is an
   :class:`~clibridge._errors.OutputInvalid` error.

:func:`check_schema` refuses an invalid schema at decode time (a 400 naming the field).
"""

from __future__ import annotations

import json
import re
from typing import Any

import jsonschema
import jsonschema.exceptions
import jsonschema.validators

from ._errors import RequestError
from ._events import OutputFormat

#: one fenced block and nothing else around it (```json ... ``` or ``` ... ```)
_FENCE = re.compile(r"\A\s*```[A-Za-z0-9_-]*[ \t]*\n(?P<body>.*?)\n?```\s*\Z", re.DOTALL)


class FormatMismatch(Exception):
    """The reply does not match the format; the message says how (for the retry)."""


def check_schema(schema: object, param: str) -> dict[str, Any]:
    """``schema`` if it is a valid JSON Schema object, else a RequestError naming ``param``."""
    if not isinstance(schema, dict):
        raise RequestError(f"{param}: a JSON Schema object is required", param=param)
    validator = jsonschema.validators.validator_for(schema)
    try:
        validator.check_schema(schema)
    except jsonschema.exceptions.SchemaError as exc:
        where = "/".join(str(p) for p in exc.absolute_path)
        raise RequestError(
            f"{param}: not a valid JSON Schema ({exc.message}"
            + (f" at {where}" if where else "")
            + ")",
            param=param,
        ) from None
    return schema


def instruction(fmt: OutputFormat) -> str:
    """What the system prompt gains so that the model answers in ``fmt``."""
    if fmt.kind == "json_object" or fmt.schema is None:
        what = "a single JSON object" if fmt.kind == "json_object" else "a single JSON value"
        return (
            f"Respond with {what} and nothing else: no prose before or after it, "
            "no Markdown code fences."
        )
    schema = json.dumps(fmt.schema, ensure_ascii=False, separators=(",", ":"))
    named = f' named "{fmt.name}"' if fmt.name else ""
    return (
        "Respond with a single JSON value and nothing else (no prose before or after it, "
        f"no Markdown code fences). It must be valid under this JSON Schema{named}:\n" + schema
    )


def with_instruction(system: str, fmt: OutputFormat) -> str:
    """``system`` with the format's instruction appended."""
    return f"{system}\n\n{instruction(fmt)}" if system else instruction(fmt)


def check(text: str, fmt: OutputFormat) -> str:
    """The reply's JSON text (unwrapped from a code fence) if it matches ``fmt``.

    Raises :class:`FormatMismatch` saying what is wrong.
    """
    fenced = _FENCE.match(text)
    body = (fenced.group("body") if fenced else text).strip()
    if not body:
        raise FormatMismatch("the reply was empty, not JSON")
    try:
        value = json.loads(body)
    except ValueError as exc:
        raise FormatMismatch(f"the reply is not valid JSON ({exc})") from None
    if fmt.kind == "json_object" and not isinstance(value, dict):
        raise FormatMismatch(f"the reply is JSON, but a {type(value).__name__}, not an object")
    if fmt.kind == "json_schema" and fmt.schema is not None:
        validator_cls = jsonschema.validators.validator_for(fmt.schema)
        error = jsonschema.exceptions.best_match(validator_cls(fmt.schema).iter_errors(value))
        if error is not None:
            where = "".join(f"[{p!r}]" for p in error.absolute_path)
            raise FormatMismatch(
                f"the reply does not match the JSON Schema: {error.message}"
                + (f" (at ${where})" if where else "")
            )
    return body


def retry_prompt(problem: str, fmt: OutputFormat) -> str:
    """The user message that asks for the reply once more after ``problem``."""
    return (
        f"Your previous reply cannot be used: {problem}. Reply again with the complete "
        f"answer. {instruction(fmt)}"
    )
