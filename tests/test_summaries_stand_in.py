"""The OpenAI-compatible stand-in itself: what the official client sees of it, its embeddings, its control
endpoint and its standalone process."""

from __future__ import annotations

import asyncio
import math
import sys
from pathlib import Path

import aiohttp
import openai
import pytest

from notifier.models import Paper
from notifier.summaries.client import LlmClient
from notifier.summaries.prompt import build_prompt
from tests.llm_server import LlmStandIn, count_tokens, prompt_tokens, valid_answer

REPO = Path(__file__).resolve().parents[1]
PAPER = Paper("2506.00003", 1, "Sparse averaging", "We average sparsely. It works.", ("A. Author",), ("cs.LG",))


def test_the_valid_answer_is_made_from_the_paper_between_the_delimiters():
    prompt = build_prompt(PAPER, ("Pluralis Research",))
    messages = [{"role": "system", "content": prompt.system}, {"role": "user", "content": prompt.user}]
    answer = valid_answer(messages)
    assert answer["summary"] == "We average sparsely."
    assert answer["topic"] == "sparse" and answer["subtopic"] == "averaging average"
    assert answer["institution"] == "Pluralis Research"
    assert valid_answer(messages) == answer  # deterministic


def test_token_accounting_is_four_characters_a_token_plus_message_framing():
    assert count_tokens("") == 0 and count_tokens("abcd") == 1 and count_tokens("abcde") == 2
    messages = [{"role": "system", "content": "x" * 40}, {"role": "user", "content": "y" * 41}]
    assert prompt_tokens(messages) == (10 + 4) + (11 + 4) + 3


async def test_embeddings_are_deterministic_unit_vectors():
    async with LlmStandIn(api_key="k") as llm:
        client = openai.AsyncOpenAI(base_url=llm.url, api_key="k", max_retries=0)
        try:
            first = await client.embeddings.create(model="embed", input=["graph networks", "speech"], dimensions=16)
            again = await client.embeddings.create(model="embed", input="graph networks", dimensions=16)
        finally:
            await client.close()
    vectors = [item.embedding for item in first.data]
    assert [len(v) for v in vectors] == [16, 16] and vectors[0] != vectors[1]
    assert again.data[0].embedding == vectors[0]
    assert all(math.isclose(sum(x * x for x in v), 1.0) for v in vectors)
    assert first.usage.prompt_tokens == count_tokens("graph networks") + count_tokens("speech")


async def test_the_control_endpoint_switches_modes_while_it_runs():
    async with LlmStandIn() as llm, aiohttp.ClientSession() as session:
        control = llm.url.replace("/v1", "/_control")
        async with session.post(control, json={"mode": "nonsense"}) as response:
            assert response.status == 400
        async with session.post(control, json={"mode": "invalid", "fail_next": 1, "fail_mode": "error"}) as response:
            assert (await response.json())["mode"] == "invalid"
        assert (llm.mode, llm.fail_next, llm.fail_mode) == ("invalid", 1, "error")


@pytest.mark.slow
async def test_standalone_server():
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.llm_server", "--port", "0", "--api-key", "k", cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), 20)).decode().strip()
        assert line.startswith("READY http://127.0.0.1:") and line.endswith("/v1")
        url = line.split()[1]
        async with LlmClient(url=url, model="m", api_key="k") as client:
            summary, usage = await client.summarise(PAPER)
        assert summary.summary == "We average sparsely." and usage.prompt_tokens > 0
        async with aiohttp.ClientSession() as session, session.get(url.replace("/v1", "/_control")) as response:
            state = await response.json()
        assert state["chats"] == 1 and state["requests"][0]["model"] == "m"
    finally:
        process.terminate()
        assert await process.wait() == 0
