"""A local stand-in for an OpenAI-compatible LLM server (``/v1/chat/completions`` and ``/v1/embeddings``), for tests.

In a test::

    async with LlmStandIn(api_key="sk-test") as llm:
        client = LlmClient(url=llm.url, model="stand-in", api_key="sk-test")
        llm.mode = "rate_limit"                      # every answer a 429 with Retry-After: 1
        llm.fail_next, llm.fail_mode = 2, "error"    # or: two 500s, then answers in ``mode``
        ...
        assert llm.chats == 3 and llm.requests[0]["temperature"] == 0

Modes (``MODES``), switchable while it runs:

- ``valid``: a JSON answer made from the paper in the request, deterministically: the summary is the first sentence
  of the abstract found between the prompt's ``<paper>`` delimiters, the topic, subtopic and keywords are its
  longer words, the institution the first affiliation when the prompt gives one (else null);
- ``fenced``: the same answer inside a ```json fence, with prose before and after;
- ``invalid``: prose, no JSON;
- ``rate_limit``: 429 with ``Retry-After: <retry_after>`` (1 s unless set);
- ``error``: 500;
- ``stall``: no answer until the stand-in is closed;
- ``inject``: a hostile answer (HTML and script, Slack mentions, a CRLF and a mail header) in every text field;
- ``reject_format``: 400 when the request has ``response_format`` (as llama.cpp's server does), ``valid`` otherwise.

Token accounting, as a real server reports it in ``usage``: ``prompt_tokens`` is one token per 4 characters
(rounded up) of each message's content, plus 4 per message and 3 to prime the answer (OpenAI's rule of thumb for
English, and its per-message overhead); ``completion_tokens`` is the same count of the answer's content. With
``report_usage = False`` the answers carry no ``usage``, like some local servers.

Embeddings: deterministic unit vectors (``dimensions`` long, 1,024 unless asked), a hashed bag of words: each word
of five letters or more (stop words left out) adds 1 + log(count) to the coordinate a SHA-256 of it picks, with the
sign another bit of it gives, so texts sharing words are near and the same text gives the same vector (a text with
no such word, a vector from the SHA-256 of the whole text). ``embeddings_mode`` (``EMBEDDINGS_MODES``) makes them
fail: ``error`` (500), ``stall`` (no answer until closed), ``bad`` (one vector fewer than the inputs),
``non_numeric`` (the first vector's values are words); ``ok`` answers. ``embedding_requests`` are the request
bodies, ``embedding_inputs`` the texts asked for, in all.

Standalone: ``python -m tests.llm_server --port 0 [--mode valid] [--api-key K]`` prints
``READY http://127.0.0.1:PORT/v1``. ``POST /_control`` with JSON ``{"mode": ..., "fail_next": ..., "fail_mode": ...,
"retry_after": ...}`` changes those settings; ``GET /_control`` returns them with ``chats`` and ``requests``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import math
import re
import signal
import struct
import time
from typing import Any

from aiohttp import web

from notifier.summaries.prompt import PAPER_CLOSE, PAPER_OPEN

EMBEDDINGS_MODES = ("ok", "error", "stall", "bad", "non_numeric")
MODES = ("valid", "fenced", "invalid", "rate_limit", "error", "stall", "inject", "reject_format")
HOSTILE_SUMMARY = (
    "<script>alert(1)</script><img src=x onerror=alert(2)> <!channel> @here <@U123> *bold* Subject: x\r\nBcc: a@b"
)
HOSTILE_TOPIC = "<b>topic</b>"
HOSTILE_KEYWORD = '<a href="javascript:alert(3)">k</a>'
_STOPWORDS = frozenset(
    "about above after again against among these those their there which while where with within without would "
    "based using propose proposed present presents paper approach method methods results show shows model models "
    "however through between further other such than that this from have been into over under also both each more "
    "most many much very when what they them then only well first second third novel existing across".split()
)
_WORD = re.compile(r"[A-Za-z][A-Za-z-]{4,}")
_SENTENCE = re.compile(r"(.+?[.!?])(?:\s|$)")


def count_tokens(text: str) -> int:
    """The stand-in's token count of one text: one per 4 characters, rounded up."""
    return math.ceil(len(text) / 4)


def prompt_tokens(messages: list[dict[str, Any]]) -> int:
    """What a request's messages cost: their contents, 4 tokens of framing per message, 3 to prime the answer."""
    return sum(count_tokens(_content(m)) + 4 for m in messages) + 3


def _content(message: dict[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, list):  # content parts
        return " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return content if isinstance(content, str) else ""


def paper_fields(messages: list[dict[str, Any]]) -> dict[str, str]:
    """The ``Field: value`` lines between the paper delimiters of the last user message."""
    user = next((_content(m) for m in reversed(messages) if m.get("role") == "user"), "")
    start, end = user.find(PAPER_OPEN), user.rfind(PAPER_CLOSE)
    block = user[start + len(PAPER_OPEN) : end] if 0 <= start < end else user
    fields: dict[str, str] = {}
    for line in block.splitlines():
        name, sep, value = line.partition(": ")
        if sep and name.strip().isalpha():
            fields.setdefault(name.strip().lower(), value.strip())
    if "abstract" not in fields:
        fields["abstract"] = " ".join(block.split())
    return fields


def valid_answer(messages: list[dict[str, Any]]) -> dict[str, Any]:
    """The deterministic answer of ``valid`` mode to a request with ``messages``."""
    fields = paper_fields(messages)
    abstract = fields.get("abstract", "")
    first = _SENTENCE.match(abstract)
    words: list[str] = []
    for word in _WORD.findall(f"{fields.get('title', '')} {abstract}"):
        lowered = word.lower().strip("-")
        if lowered not in _STOPWORDS and lowered not in words:
            words.append(lowered)
    words += ["general", "research", "paper", "study"]
    affiliations = fields.get("affiliations")
    return {
        "summary": (first[1] if first else abstract) or "A paper.",
        "topic": words[0],
        "subtopic": " ".join(words[1:3]),
        "keywords": words[3:7],
        "institution": affiliations.split(";")[0].strip() if affiliations else None,
    }


def hostile_answer() -> dict[str, Any]:
    return {
        "summary": HOSTILE_SUMMARY,
        "topic": HOSTILE_TOPIC,
        "subtopic": "<i>sub</i>\r\nX-Injected: 1",
        "keywords": [HOSTILE_KEYWORD, "@channel", "<!here>"],
        "institution": "<script>alert(4)</script> Inc.\nBcc: c@d",
    }


def embedding(text: str, dimensions: int) -> list[float]:
    """A unit vector of ``dimensions`` floats, the same for the same text, near those of texts sharing its words."""
    counts: dict[str, int] = {}
    for word in _WORD.findall(text):
        lowered = word.lower().strip("-")
        if lowered not in _STOPWORDS:
            counts[lowered] = counts.get(lowered, 0) + 1
    if not counts:
        return _hashed(text, dimensions)
    values = [0.0] * dimensions
    for word, count in counts.items():
        digest = int.from_bytes(hashlib.sha256(word.encode()).digest()[:8], "big")
        values[digest % dimensions] += (1 + math.log(count)) * (1 if digest >> 63 else -1)
    norm = math.sqrt(sum(v * v for v in values))
    return [v / norm for v in values] if norm else _hashed(text, dimensions)


def _hashed(text: str, dimensions: int) -> list[float]:
    """A unit vector of ``dimensions`` floats from the SHA-256 of ``text``."""
    raw = b""
    counter = 0
    while len(raw) < dimensions * 4:
        raw += hashlib.sha256(f"{counter}:{text}".encode()).digest()
        counter += 1
    values = [(n / 0xFFFFFFFF) * 2 - 1 for n in struct.unpack(f"<{dimensions}I", raw[: dimensions * 4])]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [v / norm for v in values]


class LlmStandIn:
    """The stand-in: an aiohttp app on 127.0.0.1 and a free port (or ``port``), in the running event loop."""

    def __init__(self, *, api_key: str | None = None, mode: str = "valid", port: int = 0) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; one of {', '.join(MODES)}")
        self.api_key = api_key
        self.mode = mode
        self.fail_next = 0  # answer the next N chats in fail_mode, then in mode
        self.fail_mode = "error"
        self.retry_after: float | str = 1  # the Retry-After of rate_limit answers
        self.report_usage = True
        self.delay = 0.0  # seconds each chat waits before it is answered (to hold requests in flight)
        self.requests: list[dict[str, Any]] = []  # the JSON bodies of chat requests, in arrival order
        self.request_times: list[float] = []  # time.monotonic() at each chat request's arrival
        self.authorizations: list[str | None] = []  # the Authorization header of each chat request
        self.chats = 0  # chat requests, refused or not
        self.in_flight = 0
        self.max_in_flight = 0
        self.prompt_tokens = 0  # totals of the usage reported in answers
        self.completion_tokens = 0
        self.embeddings_mode = "ok"
        self.embedding_requests: list[dict[str, Any]] = []  # the JSON bodies of embedding requests
        self.embedding_inputs = 0  # texts asked to embed, in all
        self._port = port
        self._runner: web.AppRunner | None = None
        self._closing = asyncio.Event()
        self._arrived = asyncio.Event()
        self.port = 0
        self.app = web.Application()
        self.app.router.add_post("/v1/chat/completions", self._chat)
        self.app.router.add_post("/v1/embeddings", self._embeddings)
        self.app.router.add_get("/_control", self._control_get)
        self.app.router.add_post("/_control", self._control_post)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def start(self) -> LlmStandIn:
        self._runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self._port)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        return self

    async def close(self) -> None:
        self._closing.set()  # stalled answers end now
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> LlmStandIn:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def wait_for_chats(self, count: int) -> None:
        """Return once ``count`` chat requests have arrived."""
        while self.chats < count:
            self._arrived.clear()
            await self._arrived.wait()

    def _authorized(self, request: web.Request) -> bool:
        return self.api_key is None or request.headers.get("Authorization") == f"Bearer {self.api_key}"

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        self.chats += 1
        self._arrived.set()
        self.request_times.append(time.monotonic())
        self.authorizations.append(request.headers.get("Authorization"))
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return await self._answer(request)
        finally:
            self.in_flight -= 1

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "the body is not JSON", "invalid_request_error")
        self.requests.append(body)
        if not self._authorized(request):  # echoing the key given, as a careless server might
            given = request.headers.get("Authorization", "").removeprefix("Bearer ")
            return _error(401, f"Incorrect API key provided: {given}.", "invalid_request_error", code="invalid_api_key")
        messages = body.get("messages")
        if not isinstance(messages, list) or not body.get("model"):
            return _error(400, "model and messages are required", "invalid_request_error")
        mode = self.mode
        if self.fail_next > 0:
            self.fail_next -= 1
            mode = self.fail_mode
        if self.delay:
            await asyncio.sleep(self.delay)
        if mode == "reject_format":
            if "response_format" in body:
                return _error(400, "response_format is not supported", "invalid_request_error")
            mode = "valid"
        if mode == "rate_limit":
            return _error(429, "Rate limit reached.", "requests", headers={"Retry-After": str(self.retry_after)})
        if mode == "error":
            return _error(500, "The server had an error while processing your request.", "server_error")
        if mode == "stall":
            await self._closing.wait()
            return _error(503, "shutting down", "server_error")
        content = self._content(mode, messages)
        usage = {"prompt_tokens": prompt_tokens(messages), "completion_tokens": count_tokens(content)}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        answer: dict[str, Any] = {
            "id": f"chatcmpl-{self.chats}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        }
        if self.report_usage:
            answer["usage"] = usage
            self.prompt_tokens += usage["prompt_tokens"]
            self.completion_tokens += usage["completion_tokens"]
        return web.json_response(answer)

    def _content(self, mode: str, messages: list[dict[str, Any]]) -> str:
        if mode == "invalid":
            return "I'm sorry, but I can only describe this paper in words: it is about many things."
        if mode == "inject":
            return json.dumps(hostile_answer())
        text = json.dumps(valid_answer(messages), ensure_ascii=False)
        if mode == "fenced":
            return f"Here is the summary you asked for:\n```json\n{text}\n```\nLet me know if you need more."
        return text

    async def _embeddings(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return _error(401, "Incorrect API key provided.", "invalid_request_error", code="invalid_api_key")
        body = await request.json()
        self.embedding_requests.append(body)
        inputs = body.get("input")
        texts = [inputs] if isinstance(inputs, str) else inputs
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            return _error(400, "input must be a string or a list of strings", "invalid_request_error")
        self.embedding_inputs += len(texts)
        if self.embeddings_mode == "error":
            return _error(500, "The server had an error while processing your request.", "server_error")
        if self.embeddings_mode == "stall":
            await self._closing.wait()
            return _error(503, "shutting down", "server_error")
        dimensions = int(body.get("dimensions") or 1024)
        tokens = sum(count_tokens(t) for t in texts)
        data: list[dict[str, Any]] = [
            {"object": "embedding", "index": number, "embedding": embedding(text, dimensions)}
            for number, text in enumerate(texts)
        ]
        if self.embeddings_mode == "bad":
            data = data[:-1]
        elif self.embeddings_mode == "non_numeric":
            data[0]["embedding"] = ["not", "a", "number"]
        return web.json_response({
            "object": "list",
            "data": data,
            "model": body.get("model", ""),
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        })  # fmt: skip

    async def _control_get(self, request: web.Request) -> web.Response:
        return web.json_response({
            "mode": self.mode, "fail_next": self.fail_next, "fail_mode": self.fail_mode,
            "retry_after": self.retry_after, "chats": self.chats, "requests": self.requests,
            "embeddings_mode": self.embeddings_mode, "embedding_requests": len(self.embedding_requests),
            "embedding_inputs": self.embedding_inputs,
        })  # fmt: skip

    async def _control_post(self, request: web.Request) -> web.Response:
        body = await request.json()
        for mode in (body.get("mode"), body.get("fail_mode")):
            if mode is not None and mode not in MODES:
                return web.json_response({"error": f"unknown mode {mode!r}"}, status=400)
        if body.get("embeddings_mode", "ok") not in EMBEDDINGS_MODES:
            return web.json_response({"error": f"unknown embeddings mode {body['embeddings_mode']!r}"}, status=400)
        self.embeddings_mode = body.get("embeddings_mode", self.embeddings_mode)
        self.mode = body.get("mode", self.mode)
        self.fail_mode = body.get("fail_mode", self.fail_mode)
        self.fail_next = int(body.get("fail_next", self.fail_next))
        self.retry_after = body.get("retry_after", self.retry_after)
        return await self._control_get(request)


def _error(
    status: int, message: str, kind: str, *, code: str | None = None, headers: dict[str, str] | None = None
) -> web.Response:
    """An error in the shape OpenAI's API sends."""
    error = {"message": message, "type": kind, "param": None, "code": code}
    return web.json_response({"error": error}, status=status, headers=headers)


async def _serve(port: int, mode: str, api_key: str | None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with LlmStandIn(api_key=api_key, mode=mode, port=port) as server:
        print(f"READY {server.url}", flush=True)
        await stop.wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="A local OpenAI-compatible LLM stand-in for tests.")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--mode", choices=MODES, default="valid")
    parser.add_argument("--api-key", help="the bearer key to require (none: any or no key is accepted)")
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args.port, args.mode, args.api_key))


if __name__ == "__main__":
    main()
