"""How often a 10-turn conversation stays on one clibridge instance behind LiteLLM.

Method
------
Three ``clibridge serve --backend fake`` instances (each its own process, own port, 127.0.0.1)
behind the pinned LiteLLM proxy (``scripts/install-litellm.sh``), configured by
``clibridge litellm-config --out`` exactly as generated (``simple-shuffle``, session
affinity, Responses continuity, prompt-caching affinity, the ``/readyz`` callback). A
*conversation* is 10 requests to the claude model ``claude-sonnet-4-5``, each carrying the
whole history so far (what a stateless API client sends); ``--conversations`` of them run
one after the other, so the instance that served a turn is the one whose ``served`` count
rose (LiteLLM's ``x-litellm-model-api-base`` header is missing on ``/v1/messages``).
Three client styles:

* ``plain``: OpenAI Chat Completions, no session hint (most clients, OpenClaw included).
* ``session``: the same with an ``x-litellm-session-id: <conversation id>`` header.
* ``cached``: Anthropic Messages whose first user message is a ~2,000-token document, with
  ``cache_control`` on the system prompt and on the newest user message (what Claude
  Code-like clients send), no header. (LiteLLM counts only the messages, not the system
  prompt, against its 1,024-token prompt-caching threshold: with a long system prompt and
  short messages nothing is pinned -- measured.)

Reported per style: the share of conversations whose 10 turns all ran on one instance,
the mean number of instance changes per conversation (at most 9), and the instances' own
continuation counters (``resume_hits`` / ``resume_misses`` summed over the instances: a
miss is a turn that replayed the history on a fresh worker).

Run: ``.venv/bin/python bench/litellm_sticky.py [--conversations N]``
"""

from __future__ import annotations

import argparse
import itertools
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx
import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.chaos._serve import ServeProcess, serve_process
from tests.scale._proxy import Proxy, free_port, litellm_proxy

from bench._common import table, write_results

MODEL = "claude-sonnet-4-5"
TURNS = 10
STYLES = ("plain", "session", "cached")
POOL = ("--claude-workers", "4", "--claude-spares", "1", "--codex-workers", "1")
POOL += ("--codex-spares", "0")
SYSTEM = "You are a careful assistant."
#: the first user message of a ``cached`` conversation: a long document (~2,000 tokens), so
#: the messages alone pass LiteLLM's 1,024-token prompt-caching threshold
DOCUMENT = "Please read this document. " + " ".join(f"Clause {i}: be precise." for i in range(400))


async def turn(
    client: httpx.AsyncClient, proxy: Proxy, style: str, conv: str, history: list[Any]
) -> str:
    """One request with the conversation so far; the reply text."""
    auth = {"Authorization": f"Bearer {proxy.master_key}"}
    if style == "cached":
        messages = [dict(m) for m in history]
        last = messages[-1]
        messages[-1] = {
            "role": "user",
            "content": [
                {"type": "text", "text": last["content"], "cache_control": {"type": "ephemeral"}}
            ],
        }
        body = {
            "model": MODEL,
            "max_tokens": 200,
            "system": [{"type": "text", "text": SYSTEM, "cache_control": {"type": "ephemeral"}}],
            "messages": messages,
        }
        r = await client.post(proxy.url + "/v1/messages", json=body, headers=auth)
        r.raise_for_status()
        text = "".join(b.get("text", "") for b in r.json()["content"])
    else:
        headers = dict(auth)
        if style == "session":
            headers["x-litellm-session-id"] = conv
        body = {"model": MODEL, "messages": history}
        r = await client.post(proxy.url + "/v1/chat/completions", json=body, headers=headers)
        r.raise_for_status()
        text = r.json()["choices"][0]["message"]["content"]
    return text


async def served_by(servers: list[ServeProcess]) -> list[int]:
    return [int((await s.all_stats())["claude"]["served"]) for s in servers]


async def conversation(
    client: httpx.AsyncClient, proxy: Proxy, servers: list[ServeProcess], style: str, conv: str
) -> list[str]:
    """One conversation, turn after turn; the instance that served each turn (the one whose
    ``served`` count rose: conversations run one at a time)."""
    history: list[Any] = []
    path: list[str] = []
    for i in range(TURNS):
        prompt = f"{conv}: turn {i + 1}, go on"
        if style == "cached" and i == 0:
            prompt = f"{DOCUMENT}\n{prompt}"
        history.append({"role": "user", "content": prompt})
        before = await served_by(servers)
        text = await turn(client, proxy, style, conv, history)
        after = await served_by(servers)
        rose = [s.base_url for s, b, a in zip(servers, before, after, strict=True) if a > b]
        assert len(rose) == 1, f"turn served by {rose}?"
        history.append({"role": "assistant", "content": text})
        path.append(rose[0])
    return path


async def resumes(servers: list[ServeProcess]) -> dict[str, int]:
    """The instances' continuation counters, summed (misses also by reason)."""
    out = {"resume_hits": 0, "resume_misses": 0}
    for server in servers:
        stats = (await server.all_stats())["claude"]
        for key in ("resume_hits", "resume_misses"):
            out[key] += int(stats[key])
        for reason, count in stats["resume_miss_reasons"].items():
            out[f"miss:{reason}"] = out.get(f"miss:{reason}", 0) + int(count)
    return out


async def run_style(
    proxy: Proxy, servers: list[ServeProcess], style: str, n: int
) -> dict[str, Any]:
    before = await resumes(servers)
    paths: list[list[str]] = []
    async with httpx.AsyncClient(timeout=120, trust_env=False) as client:
        for k in range(n):
            conv = f"{style}-conv-{k:04d}"
            paths.append(await conversation(client, proxy, servers, style, conv))
    after = await resumes(servers)
    switches = [sum(a != b for a, b in itertools.pairwise(p)) for p in paths]
    return {
        "conversations": len(paths),
        "all_on_one_instance": sum(len(set(p)) == 1 for p in paths) / len(paths),
        "mean_instance_changes": sum(switches) / len(switches),
        "instances_used": sorted({i for p in paths for i in p}),
        **{k: after[k] - before.get(k, 0) for k in after},
    }


async def main_async(n: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="litellm-sticky-") as tmp:
        root = Path(tmp)
        ports = [free_port() for _ in range(3)]
        async with (
            serve_process(root / "a", "--port", str(ports[0]), *POOL) as a,
            serve_process(root / "b", "--port", str(ports[1]), *POOL) as b,
            serve_process(root / "c", "--port", str(ports[2]), *POOL) as c,
        ):
            urls = [s.base_url for s in (a, b, c)]
            async with litellm_proxy(root / "litellm", urls) as proxy:
                return {style: await run_style(proxy, [a, b, c], style, n) for style in STYLES}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--conversations", type=int, default=30)
    args = parser.parse_args(argv)
    results = trio.run(main_async, args.conversations)
    rows = [
        (
            style,
            r["conversations"],
            f"{100 * r['all_on_one_instance']:.0f} %",
            f"{r['mean_instance_changes']:.2f}",
            r["resume_hits"],
            r["resume_misses"],
        )
        for style, r in results.items()
    ]
    print(
        table(
            (
                "client",
                "conversations",
                "10 turns on one instance",
                "changes / conv",
                "resume hits",
                "resume misses",
            ),
            rows,
        )
    )
    path = write_results("litellm_sticky", {"turns": TURNS, **results})
    print(f"results: {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
