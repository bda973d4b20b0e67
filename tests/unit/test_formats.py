"""JSON response formats: the instruction, the check of a reply, the retry prompt
(clibridge._formats).

Regression (issue 14): ``response_format`` ``json_object`` was accepted and ignored and
``json_schema`` refused.
"""

from __future__ import annotations

import json

import pytest

from clibridge._errors import RequestError
from clibridge._events import OutputFormat
from clibridge._formats import (
    FormatMismatch,
    check,
    check_schema,
    instruction,
    retry_prompt,
    with_instruction,
)

SCHEMA = {
    "type": "object",
    "properties": {
        "n": {"type": "integer"},
        "tags": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["n"],
}
OBJECT = OutputFormat("json_object")
SCHEMA_FORMAT = OutputFormat("json_schema", SCHEMA, "thing", strict=True)


def test_instruction_names_the_schema() -> None:
    text = instruction(SCHEMA_FORMAT)
    assert json.dumps(SCHEMA, separators=(",", ":")) in text
    assert '"thing"' in text
    assert "JSON object" in instruction(OBJECT)
    assert with_instruction("Be brief.", OBJECT).startswith("Be brief.\n\n")
    assert with_instruction("", OBJECT) == instruction(OBJECT)


@pytest.mark.parametrize(
    ("reply", "fmt", "want"),
    [
        ('{"a": 1}', OBJECT, '{"a": 1}'),
        ('  {"a": 1}\n', OBJECT, '{"a": 1}'),
        ('```json\n{"a": 1}\n```', OBJECT, '{"a": 1}'),
        ('```\n{"n": 2, "tags": ["x"]}\n```\n', SCHEMA_FORMAT, '{"n": 2, "tags": ["x"]}'),
        ("[1, 2]", OutputFormat("json_schema"), "[1, 2]"),
    ],
)
def test_valid_replies(reply: str, fmt: OutputFormat, want: str) -> None:
    assert check(reply, fmt) == want


@pytest.mark.parametrize(
    ("reply", "fmt", "problem"),
    [
        ("", OBJECT, "empty"),
        ("Sure! Here it is.", OBJECT, "not valid JSON"),
        ('Here: ```json\n{"a": 1}\n```', OBJECT, "not valid JSON"),
        ("[1, 2]", OBJECT, "a list, not an object"),
        ('{"tags": []}', SCHEMA_FORMAT, "'n' is a required property"),
        ('{"n": 1, "tags": [3]}', SCHEMA_FORMAT, "at $['tags'][0]"),
    ],
)
def test_invalid_replies_say_why(reply: str, fmt: OutputFormat, problem: str) -> None:
    with pytest.raises(FormatMismatch, match=problem.replace("[", r"\[").replace("$", r"\$")):
        check(reply, fmt)


def test_retry_prompt_carries_the_problem_and_the_instruction() -> None:
    text = retry_prompt("the reply is not valid JSON", SCHEMA_FORMAT)
    assert "the reply is not valid JSON" in text
    assert instruction(SCHEMA_FORMAT) in text


def test_bad_schemas_are_refused_naming_the_field() -> None:
    assert check_schema(SCHEMA, "$.s") is SCHEMA
    bads: list[object] = [
        {"type": "integr"},
        {"required": "n"},
        [],
        {"type": "string", "pattern": "("},
    ]
    for bad in bads:
        with pytest.raises(RequestError) as info:
            check_schema(bad, "$.response_format.json_schema.schema")
        assert info.value.param == "$.response_format.json_schema.schema"


@pytest.mark.parametrize(
    ("schema", "problem", "param"),
    [
        ({"$schema": []}, "not a JSON Schema draft", "$.s.$schema"),
        ({"$schema": "http://example.com/mine"}, "not a JSON Schema draft", "$.s.$schema"),
        ({"$ref": "https://example.com/s.json"}, "is not local", "$.s"),
        ({"$ref": "#/$defs/nope"}, "points at nothing", "$.s"),
        ({"$ref": "#"}, "references loop", "$.s"),
        ({"$ref": "#nowhere"}, "cannot be resolved", "$.s"),
    ],
)
def test_unusable_schemas_are_refused(schema: dict[str, object], problem: str, param: str) -> None:
    """Found while fuzzing by hand: these raised TypeError, a DeprecationWarning,
    jsonschema's unresolvable-reference error or RecursionError (a 500) instead of a 400."""
    with pytest.raises(RequestError, match=problem) as info:
        check_schema(schema, "$.s")
    assert info.value.param == param


def test_usable_refs_and_drafts() -> None:
    schema = {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "definitions": {"a~b": {"type": "integer"}},
        "$ref": "#/definitions/a~0b",
    }
    fmt = OutputFormat("json_schema", check_schema(schema, "$.s"))
    assert check("3", fmt) == "3"
    with pytest.raises(FormatMismatch, match="not of type 'integer'"):
        check('"x"', fmt)
    deep = "[" * 5000 + "]" * 5000
    with pytest.raises(FormatMismatch, match="nested too deeply"):
        check(deep, OBJECT)
