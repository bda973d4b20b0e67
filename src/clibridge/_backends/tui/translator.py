"""One TUI turn, pure: transcript entries and debug-log attempts in, neutral events out.

Theory of operation
-------------------
A :class:`TranscriptTranslator` follows one turn from the ``user`` line of our prompt to
``system/turn_duration``::

    our user line                -> TurnStarted(model)
    assistant text block         -> TextDelta (the whole block: the transcript is written
                                    per content block, not per token)
    assistant thinking block     -> ThinkingDelta
    assistant error line         -> the error of its apiErrorStatus (as the stream-json
                                    driver maps an error ``result``)
    turn_duration                -> Finished(stop reason of the last message, usage summed
                                    over the turn's messages: each block line repeats its
                                    message's usage, so the last one per message id counts)

and the debug log's ``API error (attempt N/M): STATUS`` lines fail the turn fast, by the
same :class:`~clibridge._backends.claude.translator.RetryPolicy` as the stream-json driver:
401 at once, 429 / 503 / 529 once ``retry_attempts`` attempts were seen (the delay the
screen shows is the ``retry_after``); only retry loops that began in this turn count (an
attempt 1 was seen), since the CLI's session-title request of an earlier, interrupted turn
may still be retrying into the same log. The worker feeds only what was appended after the
paste; our prompt's ``user`` line is not waited for (the CLI may write a session's first
prompt after its reply), and slash-command echoes are not prompts.
"""

from __future__ import annotations

import logging

from ..._errors import UpstreamError
from ..._events import Event, Finished, TextDelta, ThinkingDelta, TurnStarted, Usage
from ..claude.translator import RetryPolicy, error_for_status, finish_reason, login_expired
from .parser import ApiAttempt, AssistantBlock, Entry, TurnEnd, UserEntry

__all__ = ["TranscriptTranslator"]

log = logging.getLogger("clibridge._backends.claude")


class TranscriptTranslator:
    """Feed transcript entries (:meth:`feed`) and debug attempts (:meth:`attempt`)."""

    def __init__(self, policy: RetryPolicy, model: str) -> None:
        self._policy = policy
        self._model = model
        self.started = False
        self.done = False
        #: the CLI acknowledged an interrupt
        self.interrupted = False
        self._usage: dict[str, Usage] = {}
        self._stop_reason: str | None = None
        self._attempts: dict[int | None, set[int]] = {}
        #: statuses whose retries began in this turn (their attempt 1 was seen)
        self._fresh: set[int | None] = set()

    def feed(self, entry: Entry) -> list[Event]:
        if self.done:
            return []
        if isinstance(entry, UserEntry):
            if entry.interrupted:
                self.interrupted = True
                self.done = True
                return []
            return [] if entry.meta else self._start()
        # Why no wait for our user line: the CLI may write a session's first prompt only
        # after the reply and turn_duration (seen with 2.1.197); everything after the
        # offset the worker read from is this turn's
        if isinstance(entry, AssistantBlock):
            return self._start() + self._assistant(entry)
        if isinstance(entry, TurnEnd):
            started = self._start()
            self.done = True
            usage = sum(self._usage.values(), Usage())
            return [*started, Finished(finish_reason(self._stop_reason), usage)]
        return []

    def take_started(self) -> list[Event]:
        """The CLI took the prompt (the worker saw it busy): TurnStarted, once."""
        return self._start()

    def _start(self) -> list[Event]:
        if self.started:
            return []
        self.started = True
        return [TurnStarted(self._model)]

    def _assistant(self, entry: AssistantBlock) -> list[Event]:
        text = str(entry.block.get("text", "")) if entry.block.get("type") == "text" else ""
        if entry.is_error:
            self.done = True
            if entry.error_status is not None:
                raise error_for_status(entry.error_status, text, self._policy)
            raise UpstreamError(f"the claude CLI ended the turn with an error: {text}"[:2000])
        if entry.synthetic:
            return []
        if entry.message_id:
            self._usage[entry.message_id] = entry.usage
        if entry.stop_reason:
            self._stop_reason = entry.stop_reason
        kind = entry.block.get("type")
        if kind == "text":
            return [TextDelta(text)] if text else []
        if kind == "thinking":
            thinking = str(entry.block.get("thinking", ""))
            return [ThinkingDelta(thinking)] if thinking else []
        # tool_use: reported from the MCP server's tools/call (worker.py), which carries
        # the same id, name and arguments and comes while the CLI waits for the result
        return []

    def attempt(self, attempt: ApiAttempt, retry_in: float | None = None) -> None:
        """An upstream error the CLI is retrying; raises when the policy says fail now."""
        if self.done:
            return
        status = attempt.status
        if attempt.attempt == 1:
            self._fresh.add(status)
        if status not in self._fresh:
            # Why: a retry loop that began before this turn (the session-title request of an
            # earlier, interrupted turn, which Escape does not stop) logs to the same file
            log.info("claude TUI: ignoring a retry that began before this turn (%s)", status)
            return
        seen = self._attempts.setdefault(status, set())
        seen.add(attempt.attempt)
        if status == 401 and self._policy.fail_fast_on_401:
            raise login_expired(self._policy, status)
        if status in (429, 503, 529) and len(seen) >= max(1, self._policy.retry_attempts):
            raise error_for_status(
                status,
                f"{attempt.message[:300]} (the CLI reported {len(seen)} retries)",
                self._policy,
                retry_in,
            )
        log.info(
            "claude TUI retrying upstream error %s, attempt %d/%d",
            status,
            attempt.attempt,
            attempt.max_attempts,
        )
