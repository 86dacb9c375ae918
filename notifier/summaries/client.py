"""One request to an OpenAI-compatible LLM server for one paper's summary, through the official ``openai`` client.

The client makes exactly one attempt per call (``max_retries=0``): retrying, backoff and deadlines are the
summariser's. What can go wrong is translated here into the :class:`~notifier.errors.SummaryError` family, so that
nothing past this module knows the ``openai`` package. That package is imported when it is first used, not with this
module: importing it adds about half a second and 16 MB to the daemon's start, which a daemon with no LLM does without.

JSON mode (``response_format={"type": "json_object"}``) is asked for. A server that refuses it with a 400 (llama.cpp
and older servers do) is asked once more without it, and not asked for it again by this process.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from notifier.arxiv.gate import parse_retry_after
from notifier.config.settings import Settings
from notifier.errors import (
    InvalidSummaryError,
    LlmConnectionError,
    LlmRateLimitError,
    LlmRefusedError,
    LlmServerError,
    LlmTimeoutError,
    SummaryError,
)
from notifier.models import Paper, Summary
from notifier.summaries.answer import parse_answer
from notifier.summaries.prompt import build_prompt

if TYPE_CHECKING:
    import openai
    from openai.types.chat import ChatCompletion, ChatCompletionMessageParam

log = logging.getLogger(__name__)

MAX_TOKENS = 400  # a summary of ~700 characters and its tags take about 250
# Servers (base URL, model) that refused JSON mode: asked without it for the rest of the process.
_WITHOUT_JSON_MODE: set[tuple[str, str]] = set()


@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens that requests cost, as the server reported them (0 when it reports none)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(self.prompt_tokens + other.prompt_tokens, self.completion_tokens + other.completion_tokens)


class LlmClient:
    """Asks one model at one OpenAI-compatible base URL for summaries. Close it with :meth:`aclose`."""

    def __init__(
        self, *, url: str, model: str, api_key: str | None = None, timeout: float = 60.0, max_tokens: int = MAX_TOKENS
    ) -> None:
        self.url = url
        self.model = model
        self.max_tokens = max_tokens
        self._api_key = api_key
        self._openai = open_client(url, api_key, timeout)

    @classmethod
    def from_settings(cls, settings: Settings) -> LlmClient:
        """The client of ``settings.llm_url`` and ``llm_model`` (set both: see :attr:`Settings.summaries_enabled`)."""
        if settings.llm_url is None or not settings.llm_model:
            raise ValueError("no LLM is configured (NOTIFIER_LLM_URL and NOTIFIER_LLM_MODEL)")
        return cls(
            url=settings.llm_url, model=settings.llm_model, api_key=settings.llm_api_key, timeout=settings.llm_timeout
        )

    @property
    def json_mode(self) -> bool:
        """Whether requests ask for JSON mode (False once the server refused it)."""
        return (self.url, self.model) not in _WITHOUT_JSON_MODE

    async def summarise(self, paper: Paper, affiliations: Sequence[str] = ()) -> tuple[Summary, Usage]:
        """One request for the summary of ``paper``. Raises a :class:`~notifier.errors.SummaryError`."""
        prompt = build_prompt(paper, affiliations)
        messages: list[ChatCompletionMessageParam] = [
            {"role": "system", "content": prompt.system},
            {"role": "user", "content": prompt.user},
        ]
        json_mode = self.json_mode
        try:
            completion = await self._create(messages, json_mode=json_mode)
        except LlmRefusedError as exc:
            if not (json_mode and exc.status == 400):
                raise
            completion = await self._create(messages, json_mode=False)
            _WITHOUT_JSON_MODE.add((self.url, self.model))
            log.info("LLM at %s refused JSON mode (%s); asking without it from now on", self.url, exc)
        usage = _usage(completion)
        try:
            content = completion.choices[0].message.content
        except (AttributeError, IndexError, TypeError):
            content = None
        if not isinstance(content, str):
            raise InvalidSummaryError(
                "invalid answer: no message content", prompt_tokens=usage.prompt_tokens,
                completion_tokens=usage.completion_tokens,
            )  # fmt: skip
        try:
            summary = parse_answer(content, paper, self.model, affiliations)
        except InvalidSummaryError as exc:
            exc.prompt_tokens, exc.completion_tokens = usage.prompt_tokens, usage.completion_tokens
            raise
        return summary, usage

    async def _create(self, messages: list[ChatCompletionMessageParam], *, json_mode: bool) -> ChatCompletion:
        import openai  # imported with the client already (see the module's docstring)

        try:
            return await self._openai.chat.completions.create(
                model=self.model,
                messages=messages,
                temperature=0,
                max_tokens=self.max_tokens,
                response_format={"type": "json_object"} if json_mode else openai.omit,
            )
        except openai.OpenAIError as exc:
            raise translate_error(exc, secret=self._api_key) from exc

    async def aclose(self) -> None:
        await self._openai.close()

    async def __aenter__(self) -> LlmClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def open_client(url: str, api_key: str | None, timeout: float) -> openai.AsyncOpenAI:
    """The ``openai`` client of an OpenAI-compatible server: one attempt per request, ``timeout`` seconds each (any
    key will do for a local server that asks for none)."""
    import openai  # here, not at the top: see the module's docstring

    return openai.AsyncOpenAI(base_url=url, api_key=api_key or "not-needed", timeout=timeout, max_retries=0)


def _usage(completion: ChatCompletion) -> Usage:
    usage = getattr(completion, "usage", None)
    prompt = getattr(usage, "prompt_tokens", 0)
    completion_tokens = getattr(usage, "completion_tokens", 0)
    return Usage(
        prompt if isinstance(prompt, int) and prompt > 0 else 0,
        completion_tokens if isinstance(completion_tokens, int) and completion_tokens > 0 else 0,
    )


def translate_error(exc: openai.OpenAIError, *, secret: str | None) -> SummaryError:
    """The :class:`SummaryError` that says what ``exc`` means for this request (``secret`` never in its message)."""
    import openai  # imported with the client already (see the module's docstring)

    if isinstance(exc, openai.APITimeoutError):
        return LlmTimeoutError("timed out")
    if isinstance(exc, openai.APIConnectionError):
        return LlmConnectionError(f"connection failed: {exc.__cause__ or exc}")
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        detail = _detail(exc, secret)
        if status == 429:
            headers = exc.response.headers
            retry_after = parse_retry_after(headers.get("retry-after"))
            milliseconds = parse_retry_after(headers.get("retry-after-ms"))
            if milliseconds is not None:
                retry_after = milliseconds / 1000
            return LlmRateLimitError("rate limited (429)", retry_after=retry_after)
        if status >= 500 or status in (408, 409):
            return LlmServerError(f"server error ({status})", status=status)
        return LlmRefusedError(f"refused ({status}){detail}", status=status)
    return InvalidSummaryError(f"invalid answer: {exc}")


def _detail(exc: openai.APIStatusError, secret: str | None) -> str:
    """``: <the server's message>``, short, on one line and without ``secret``, when it sent one."""
    body = exc.body
    message = body.get("message") if isinstance(body, dict) else None
    if not isinstance(message, str) or not message.strip():
        return ""
    text = " ".join(message.split())
    if secret:
        text = text.replace(secret, "***")
    return f": {text[:157]}..." if len(text) > 160 else f": {text}"
