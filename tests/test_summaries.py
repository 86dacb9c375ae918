"""Summaries through the real client and summariser, against the OpenAI-compatible stand-in in each of its modes."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from notifier.config.settings import load_settings
from notifier.errors import (
    InvalidSummaryError,
    LlmConnectionError,
    LlmRateLimitError,
    LlmRefusedError,
    LlmServerError,
    LlmTimeoutError,
)
from notifier.metrics import Metrics
from notifier.models import Paper, Summary
from notifier.summaries.client import LlmClient, Usage
from notifier.summaries.summariser import Summariser
from tests.llm_server import HOSTILE_KEYWORD, HOSTILE_SUMMARY, LlmStandIn, count_tokens, prompt_tokens

KEY = "sk-test-key"
PAPERS = [
    Paper(
        arxiv_id=f"2506.{i:05d}",
        version=1,
        title=f"Paper {i}: scalable asynchronous training of transformers",
        abstract=f"We study problem number {i} in distributed optimisation. Our method halves the communication.",
        authors=("Ada Lovelace", "Alan Turing"),
        categories=("cs.LG", "cs.DC"),
    )
    for i in range(1, 13)
]
PAPER = PAPERS[2]  # 2506.00003v1


@pytest_asyncio.fixture
async def llm() -> AsyncIterator[LlmStandIn]:
    async with LlmStandIn(api_key=KEY) as server:
        yield server


@pytest_asyncio.fixture
async def client(llm: LlmStandIn) -> AsyncIterator[LlmClient]:
    async with LlmClient(url=llm.url, model="stand-in-model", api_key=KEY) as made:
        yield made


def summariser(client: LlmClient, **options) -> Summariser:
    options.setdefault("concurrency", 4)
    options.setdefault("backoff", 0.01)
    return Summariser(client, **options)


def give_ups(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "given up" in r.getMessage()]


# -- one request: the client ---------------------------------------------------------------------------------------


async def test_a_valid_answer_is_the_summary_and_the_request_is_the_documented_one(llm, client):
    summary, usage = await client.summarise(PAPER, ("Analytical Engines Ltd",))
    assert summary.key == ("2506.00003", 1)
    assert summary.summary == "We study problem number 3 in distributed optimisation."
    assert summary.topic and summary.topic == summary.topic.lower() and 1 <= len(summary.keywords) <= 6
    assert summary.institution == "Analytical Engines Ltd"
    assert summary.model == "stand-in-model"
    [request] = llm.requests
    assert request["model"] == "stand-in-model"
    assert request["temperature"] == 0
    assert request["response_format"] == {"type": "json_object"}
    assert request["max_tokens"] == 400
    assert [m["role"] for m in request["messages"]] == ["system", "user"]
    assert usage == Usage(prompt_tokens(request["messages"]), llm.completion_tokens)
    assert usage.prompt_tokens > 100 and usage.completion_tokens > 10


async def test_the_api_key_is_sent_as_a_bearer_token(llm, client):
    await client.summarise(PAPER)
    assert llm.authorizations == [f"Bearer {KEY}"]


async def test_with_no_key_a_placeholder_is_sent_which_local_servers_ignore():
    async with LlmStandIn() as llm, LlmClient(url=llm.url, model="llama3.1:8b") as client:
        await client.summarise(PAPER)
    assert llm.authorizations == ["Bearer not-needed"]


async def test_a_fenced_answer_with_prose_is_read(llm, client):
    llm.mode = "fenced"
    summary, _ = await client.summarise(PAPER)
    assert summary.summary == "We study problem number 3 in distributed optimisation."


async def test_a_server_that_rejects_json_mode_is_asked_without_it_from_then_on(llm, client):
    llm.mode = "reject_format"
    assert client.json_mode
    first, _ = await client.summarise(PAPERS[0])
    second, _ = await client.summarise(PAPERS[1])
    assert first.summary.startswith("We study problem number 1") and second.summary.startswith("We study problem")
    assert ["response_format" in r for r in llm.requests] == [True, False, False]
    assert not client.json_mode
    async with LlmClient(url=llm.url, model="stand-in-model", api_key=KEY) as another:  # the same process
        await another.summarise(PAPERS[2])
    assert "response_format" not in llm.requests[-1]


@pytest.mark.parametrize(
    ("mode", "error", "retryable"),
    [
        ("invalid", InvalidSummaryError, True),
        ("rate_limit", LlmRateLimitError, True),
        ("error", LlmServerError, True),
    ],
)
async def test_each_failure_is_a_typed_error(llm, client, mode, error, retryable):
    llm.mode = mode
    with pytest.raises(error) as raised:
        await client.summarise(PAPER)
    assert raised.value.retryable is retryable
    if mode == "rate_limit":
        assert raised.value.retry_after == 1.0
    if mode == "invalid":  # an invalid answer was paid for
        assert raised.value.prompt_tokens > 100 and raised.value.completion_tokens > 0


async def test_a_wrong_key_is_refused_for_good(llm):
    async with LlmClient(url=llm.url, model="m", api_key="sk-wrong") as client:
        with pytest.raises(LlmRefusedError, match=r"refused \(401\): Incorrect API key provided: \*\*\*") as raised:
            await client.summarise(PAPER)
    assert not raised.value.retryable and raised.value.affects_all
    assert "sk-wrong" not in str(raised.value)  # the server echoed the key; the error does not


async def test_a_server_that_reports_no_usage_costs_zero_tokens(llm, client):
    llm.report_usage = False
    _, usage = await client.summarise(PAPER)
    assert usage == Usage(0, 0)


async def test_hostile_output_is_kept_as_text_but_no_control_character_or_line_break_survives(llm, client):
    llm.mode = "inject"
    summary, _ = await client.summarise(PAPER)
    assert summary.summary == HOSTILE_SUMMARY.replace("\r\n", " ")
    assert summary.topic == "<b>topic</b>"
    assert HOSTILE_KEYWORD in summary.keywords and "@channel" in summary.keywords
    fields = (summary.summary, summary.topic, summary.subtopic, *summary.keywords, summary.institution or "")
    for text in fields:
        assert not any(ord(c) < 32 or ord(c) == 127 for c in text), repr(text)
    assert "Bcc: a@b" in summary.summary  # as words on one line: never a header of its own


async def test_an_unreachable_server_is_a_connection_error():
    async with LlmStandIn() as llm:
        url = llm.url
    async with LlmClient(url=url, model="m") as client:
        with pytest.raises(LlmConnectionError, match="connection failed"):
            await client.summarise(PAPER)


async def test_a_request_that_stalls_past_the_timeout_is_a_timeout_error(llm):
    llm.mode = "stall"
    async with LlmClient(url=llm.url, model="m", api_key=KEY, timeout=0.3) as client:
        with pytest.raises(LlmTimeoutError) as raised:
            await client.summarise(PAPER)
    assert isinstance(raised.value, TimeoutError) and raised.value.retryable


# -- many papers: the summariser -----------------------------------------------------------------------------------


async def test_every_paper_is_summarised_and_handed_over_as_it_is_made(llm, client):
    handed: list[tuple[Summary, Usage]] = []
    run = await summariser(client).run(
        PAPERS[:5], {}, allowance=10, deadline=None, on_summary=lambda s, u: handed.append((s, u))
    )
    assert sorted(s.key for s in run.made) == [(p.arxiv_id, 1) for p in PAPERS[:5]]
    assert [s for s, _ in handed] == run.made
    assert (run.asked, run.requests, run.skipped, run.unreached, run.failed) == (5, 5, 0, 0, [])
    assert run.prompt_tokens == llm.prompt_tokens and run.completion_tokens == llm.completion_tokens
    assert sum(u.prompt_tokens for _, u in handed) == run.prompt_tokens
    assert len(run.latencies) == 5 and all(latency >= 0 for latency in run.latencies)


async def test_an_invalid_answer_is_retried_then_given_up_with_one_log_line(llm, client, caplog):
    llm.mode = "invalid"
    failures = []
    with caplog.at_level(logging.WARNING, logger="notifier"):
        run = await summariser(client, attempts=3).run(
            [PAPER], {}, allowance=10, deadline=None, on_failure=lambda p, why, u: failures.append((p, why, u))
        )
    assert llm.chats == 3 and run.requests == 3
    assert run.made == [] and run.failed == [(("2506.00003", 1), run.failed[0][1])]
    assert run.failed[0][1].startswith("invalid answer: no JSON object")
    assert give_ups(caplog) == [f"summary of 2506.00003v1 given up after 3 attempts: {run.failed[0][1]}"]
    [(paper, why, usage)] = failures
    assert paper == PAPER and why == run.failed[0][1]
    assert usage.prompt_tokens == run.prompt_tokens > 0  # three paid requests


async def test_server_errors_are_retried_until_an_answer_comes(llm, client, caplog):
    llm.fail_next, llm.fail_mode = 2, "error"
    with caplog.at_level(logging.WARNING, logger="notifier"):
        run = await summariser(client, attempts=3).run([PAPER], {}, allowance=10, deadline=None)
    assert [s.key for s in run.made] == [("2506.00003", 1)]
    assert llm.chats == 3 and run.failed == [] and give_ups(caplog) == []


async def test_rate_limits_honour_retry_after(llm, client):
    llm.fail_next, llm.fail_mode, llm.retry_after = 1, "rate_limit", 0.4
    run = await summariser(client).run([PAPER], {}, allowance=10, deadline=None)
    assert len(run.made) == 1 and llm.chats == 2
    assert llm.request_times[1] - llm.request_times[0] >= 0.35  # backoff alone would have waited 0.01 s


@pytest.mark.slow
async def test_a_rate_limit_of_one_second_holds_back_every_worker(llm, client, caplog):
    llm.fail_next, llm.fail_mode = 1, "rate_limit"  # Retry-After: 1
    llm.delay = 0.05
    with caplog.at_level(logging.WARNING, logger="notifier"):
        run = await summariser(client, concurrency=2).run(PAPERS[:6], {}, allowance=10, deadline=None)
    assert len(run.made) == 6 and give_ups(caplog) == []
    first, *others = llm.request_times  # the first was answered 429; the other worker's was already in flight
    assert len(others) == 6
    assert not [t - first for t in others if first + 0.1 < t < first + 0.9]


async def test_a_rate_limit_that_outlasts_the_attempts_gives_up_with_the_reason(llm, client, caplog):
    llm.mode, llm.retry_after = "rate_limit", 0.01
    with caplog.at_level(logging.WARNING, logger="notifier"):
        run = await summariser(client, attempts=3).run([PAPER], {}, allowance=10, deadline=None)
    assert run.failed == [(("2506.00003", 1), "rate limited (429)")]
    assert give_ups(caplog) == ["summary of 2506.00003v1 given up after 3 attempts: rate limited (429)"]


async def test_a_retry_after_longer_than_allowed_is_not_waited_for(llm, client):
    llm.mode, llm.retry_after = "rate_limit", 3600
    run = await summariser(client, max_wait=60).run([PAPER], {}, allowance=10, deadline=None)
    assert llm.chats == 1 and run.failed == [(("2506.00003", 1), "rate limited (429)")]


async def test_a_stalled_server_is_cut_at_the_deadline(llm, client, caplog):
    llm.mode = "stall"
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 0.5
    with caplog.at_level(logging.WARNING, logger="notifier"):
        run = await summariser(client, concurrency=2).run(PAPERS[:4], {}, allowance=10, deadline=deadline)
    assert loop.time() < deadline + 2.0  # the client's own timeout is 60 s: the deadline cut it
    assert run.made == [] and len(run.failed) == 2 and run.unreached == 2
    assert {why for _, why in run.failed} == {"cut at the deadline"}
    assert sorted(give_ups(caplog)) == [
        "summary of 2506.00001v1 given up after 1 attempt: cut at the deadline",
        "summary of 2506.00002v1 given up after 1 attempt: cut at the deadline",
    ]
    assert any("2 summaries not asked for: the deadline came first" in r.getMessage() for r in caplog.records)


async def test_no_retry_is_made_when_its_wait_would_end_past_the_deadline(llm, client, caplog):
    llm.mode = "error"
    loop = asyncio.get_running_loop()
    with caplog.at_level(logging.WARNING, logger="notifier"):
        run = await summariser(client, backoff=30).run([PAPER], {}, allowance=10, deadline=loop.time() + 5)
    assert llm.chats == 1
    assert run.failed == [(("2506.00003", 1), "server error (500); no time left to retry")]
    assert give_ups(caplog) == [
        "summary of 2506.00003v1 given up after 1 attempt: server error (500); no time left to retry"
    ]


async def test_nothing_is_asked_once_the_deadline_has_passed(llm, client):
    loop = asyncio.get_running_loop()
    run = await summariser(client).run(PAPERS[:3], {}, allowance=10, deadline=loop.time() - 1)
    assert llm.chats == 0 and run.asked == 0 and run.unreached == 3 and run.failed == []


async def test_the_allowance_skips_the_least_wanted_papers_without_asking(llm, client):
    run = await summariser(client, concurrency=1).run(PAPERS[:5], {}, allowance=2, deadline=None)
    assert [s.key for s in run.made] == [("2506.00001", 1), ("2506.00002", 1)]
    assert (run.asked, run.skipped, llm.chats) == (2, 3, 2)
    asked_titles = [json.dumps(r["messages"]) for r in llm.requests]
    assert all("Paper 3:" not in t and "Paper 4:" not in t for t in asked_titles)


async def test_an_allowance_of_zero_asks_nothing(llm, client):
    run = await summariser(client).run(PAPERS[:3], {}, allowance=0, deadline=None)
    assert (run.skipped, run.asked, llm.chats) == (3, 0, 0)


async def test_a_paper_listed_twice_is_asked_for_once(llm, client):
    run = await summariser(client, concurrency=1).run([PAPER, PAPERS[0], PAPER], {}, allowance=2, deadline=None)
    assert [s.key for s in run.made] == [("2506.00003", 1), ("2506.00001", 1)]
    assert llm.chats == 2 and run.skipped == 0


async def test_concurrency_is_never_exceeded(llm, client):
    llm.delay = 0.05
    run = await summariser(client, concurrency=3).run(PAPERS, {}, allowance=100, deadline=None)
    assert len(run.made) == 12
    assert llm.max_in_flight == 3


async def test_affiliations_reach_the_prompt_and_become_the_institution(llm, client):
    run = await summariser(client).run([PAPER], {"2506.00003": ("Bletchley Park", "MIT")}, allowance=1, deadline=None)
    assert "Affiliations: Bletchley Park; MIT" in llm.requests[0]["messages"][1]["content"]
    assert run.made[0].institution == "Bletchley Park; MIT"


async def test_a_wrong_key_stops_the_run_after_one_refusal(llm, caplog):
    async with LlmClient(url=llm.url, model="m", api_key="sk-wrong") as client:
        with caplog.at_level(logging.WARNING, logger="notifier"):
            run = await summariser(client, concurrency=1).run(PAPERS[:5], {}, allowance=10, deadline=None)
    assert llm.chats == 1 and len(run.failed) == 1 and run.unreached == 4
    assert give_ups(caplog) == [
        "summary of 2506.00001v1 given up after 1 attempt: refused (401): Incorrect API key provided: ***."
    ]


async def test_cancelling_a_run_cancels_its_requests(llm, client):
    llm.mode = "stall"
    task = asyncio.create_task(summariser(client).run(PAPERS[:3], {}, allowance=10, deadline=None))
    await asyncio.wait_for(llm.wait_for_chats(3), 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_failing_callback_stops_the_run_and_is_raised(llm, client):
    def store(summary: Summary, usage: Usage) -> None:
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        await summariser(client, concurrency=2).run(PAPERS[:4], {}, allowance=10, deadline=None, on_summary=store)


async def test_metrics_count_made_failed_skipped_latency_and_tokens(llm, client):
    metrics = Metrics()
    llm.fail_next, llm.fail_mode = 2, "invalid"
    run = await Summariser(client, concurrency=1, metrics=metrics, attempts=2, backoff=0.01).run(
        PAPERS[:3], {}, allowance=2, deadline=None
    )
    sample = metrics.registry.get_sample_value
    assert sample("notifier_summaries_total", {"outcome": "made"}) == len(run.made) == 1
    assert sample("notifier_summaries_total", {"outcome": "failed"}) == len(run.failed) == 1
    assert sample("notifier_summaries_total", {"outcome": "skipped"}) == run.skipped == 1
    assert sample("notifier_summary_latency_seconds_count") == 1
    assert sample("notifier_llm_tokens_total", {"kind": "prompt"}) == run.prompt_tokens == llm.prompt_tokens
    assert sample("notifier_llm_tokens_total", {"kind": "completion"}) == run.completion_tokens
    assert run.prompt_tokens > 0 and count_tokens("x" * 8) == 2
    assert b"notifier_summaries_total" in metrics.render()


async def test_the_client_of_the_settings_uses_their_url_model_key_and_timeout(llm, tmp_path):
    settings = load_settings({
        "NOTIFIER_DATA_DIR": str(tmp_path), "NOTIFIER_LLM_URL": llm.url, "NOTIFIER_LLM_MODEL": "llama3.1:8b",
        "NOTIFIER_LLM_API_KEY": KEY, "NOTIFIER_LLM_TIMEOUT": "0.3",
    })  # fmt: skip
    async with LlmClient.from_settings(settings) as client:
        summary, _ = await client.summarise(PAPER)
        llm.mode = "stall"
        with pytest.raises(LlmTimeoutError):
            await client.summarise(PAPER)
    assert summary.model == "llama3.1:8b"
    assert llm.authorizations == [f"Bearer {KEY}"] * 2
    with pytest.raises(ValueError, match="no LLM is configured"):
        LlmClient.from_settings(load_settings({"NOTIFIER_DATA_DIR": str(tmp_path)}))


def test_the_daemon_imports_the_openai_client_only_when_it_makes_one() -> None:
    """Importing ``openai`` adds about half a second and 16 MB to a start: a daemon without an LLM never pays for it."""
    probe = (
        "import sys\n"
        "import notifier.cli, notifier.commands, notifier.daemon\n"
        "print('openai' in sys.modules)\n"
        "from notifier.summaries.client import LlmClient\n"
        "LlmClient(url='http://127.0.0.1:9/v1', model='m')\n"
        "print('openai' in sys.modules)\n"
    )
    shown = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.split()
    assert shown == ["False", "True"]
