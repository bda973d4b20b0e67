"""Tool loops through the official SDKs, one helper per dialect.

Each ``*_round`` sends a conversation with the ``get_weather`` tool and returns what came
back (tool calls as (id, name, arguments dict), text) plus the conversation extended with
the assistant turn, so the next round can append the tool results the client's way.
"""

from __future__ import annotations

import json
from typing import Any

import anthropic
import openai
from anthropic.types import Message
from openai.types.chat import ChatCompletion
from openai.types.responses import Response

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"city": {"type": "string"}},
    "required": ["city"],
}
CHAT_TOOLS: list[Any] = [
    {
        "type": "function",
        "function": {"name": "get_weather", "description": "Get weather", "parameters": SCHEMA},
    }
]
RESPONSES_TOOLS: list[Any] = [
    {"type": "function", "name": "get_weather", "description": "Get weather", "parameters": SCHEMA}
]
ANTHROPIC_TOOLS: list[Any] = [
    {"name": "get_weather", "description": "Get weather", "input_schema": SCHEMA}
]

Call = tuple[str, str, dict[str, Any]]


def weather(city: str) -> str:
    return f"sunny in {city}"


async def chat_round(
    client: openai.AsyncOpenAI, messages: list[Any], *, stream: bool, model: str
) -> tuple[list[Call], str, str | None]:
    """(calls, text, finish_reason); appends the assistant message to ``messages``."""
    done: ChatCompletion  # the stream's ParsedChatCompletion is one
    if stream:
        async with client.chat.completions.stream(
            model=model, messages=messages, tools=CHAT_TOOLS
        ) as s:
            done = await s.get_final_completion()
    else:
        done = await client.chat.completions.create(
            model=model, messages=messages, tools=CHAT_TOOLS
        )
    choice = done.choices[0]
    calls = [
        (c.id, c.function.name, json.loads(c.function.arguments))
        for c in choice.message.tool_calls or []
        if c.type == "function"
    ]
    assistant: dict[str, Any] = {"role": "assistant", "content": choice.message.content}
    if calls:
        assistant["tool_calls"] = [
            {
                "id": cid,
                "type": "function",
                "function": {"name": name, "arguments": json.dumps(args)},
            }
            for cid, name, args in calls
        ]
    messages.append(assistant)
    return calls, choice.message.content or "", choice.finish_reason


def chat_results(messages: list[Any], calls: list[Call], rewrite: Any = None) -> None:
    for cid, _, args in calls:
        messages.append(
            {
                "role": "tool",
                "tool_call_id": rewrite(cid) if rewrite else cid,
                "content": weather(args["city"]),
            }
        )


async def responses_round(
    client: openai.AsyncOpenAI, items: list[Any], *, stream: bool, model: str
) -> tuple[list[Call], str, str | None]:
    done: Response  # the stream's ParsedResponse is one
    if stream:
        async with client.responses.stream(model=model, input=items, tools=RESPONSES_TOOLS) as s:
            done = await s.get_final_response()
    else:
        done = await client.responses.create(model=model, input=items, tools=RESPONSES_TOOLS)
    calls: list[Call] = []
    for item in done.output:
        if item.type == "function_call":
            calls.append((item.call_id, item.name, json.loads(item.arguments)))
            items.append(
                {
                    "type": "function_call",
                    "call_id": item.call_id,
                    "name": item.name,
                    "arguments": item.arguments,
                }
            )
        elif item.type == "message":
            items.append({"role": "assistant", "content": done.output_text})
    return calls, done.output_text, "tool_calls" if calls else done.status


def responses_results(items: list[Any], calls: list[Call], rewrite: Any = None) -> None:
    for cid, _, args in calls:
        items.append(
            {
                "type": "function_call_output",
                "call_id": rewrite(cid) if rewrite else cid,
                "output": weather(args["city"]),
            }
        )


async def messages_round(
    client: anthropic.AsyncAnthropic, messages: list[Any], *, stream: bool, model: str
) -> tuple[list[Call], str, str | None]:
    done: Message  # the stream's ParsedMessage is one
    if stream:
        async with client.messages.stream(
            model=model, max_tokens=1024, messages=messages, tools=ANTHROPIC_TOOLS
        ) as s:
            done = await s.get_final_message()
    else:
        done = await client.messages.create(
            model=model, max_tokens=1024, messages=messages, tools=ANTHROPIC_TOOLS
        )
    calls: list[Call] = [
        (b.id, b.name, dict(b.input)) for b in done.content if b.type == "tool_use"
    ]
    text = "".join(b.text for b in done.content if b.type == "text")
    messages.append(
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in done.content]}
    )
    return calls, text, done.stop_reason


def messages_results(messages: list[Any], calls: list[Call], rewrite: Any = None) -> None:
    messages.append(
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": rewrite(cid) if rewrite else cid,
                    "content": weather(args["city"]),
                }
                for cid, _, args in calls
            ],
        }
    )


def first_user(dialect: str, text: str) -> list[Any]:
    if dialect == "responses":
        return [{"role": "user", "content": text}]
    return [{"role": "user", "content": text}]


def openai_client(base_url: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=base_url + "/v1", api_key="x", max_retries=0, timeout=30)


def anthropic_client(base_url: str) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=base_url, api_key="x", max_retries=0, timeout=30)


#: per dialect: the round and how the client appends its tool results
ROUNDS: dict[str, tuple[Any, Any]] = {
    "chat": (chat_round, chat_results),
    "responses": (responses_round, responses_results),
    "messages": (messages_round, messages_results),
}


async def tool_loop(
    base_url: str,
    dialect: str,
    *,
    stream: bool,
    prompt: str,
    model: str,
    rewrite: Any = None,
    between: Any = None,
) -> tuple[list[Call], str, list[Any]]:
    """Round 1 (tool calls), the client's results, round 2 (the answer): the calls, the
    answer's text and the whole conversation as the client holds it."""
    convo = first_user(dialect, prompt)
    round_, results = ROUNDS[dialect]
    client: Any = anthropic_client(base_url) if dialect == "messages" else openai_client(base_url)
    async with client:
        first, _, finish = await round_(client, convo, stream=stream, model=model)
        assert finish in ("tool_calls", "tool_use")
        if between is not None:
            await between()
        results(convo, first, rewrite)
        second, text, finish = await round_(client, convo, stream=stream, model=model)
    assert second == [] and finish in ("stop", "end_turn", "completed")
    return first, text, convo
