"""Embeddings: the setting and its checks, the client against the OpenAI-compatible stand-in (batches, typed errors,
the key never shown), and the embedding space that ranks with the same profiles as TF-IDF."""

from __future__ import annotations

from collections.abc import AsyncIterator

import numpy as np
import pytest
import pytest_asyncio

from notifier.config.settings import load_settings
from notifier.embeddings.client import BATCH, EmbeddingClient
from notifier.errors import (
    ConfigError,
    EmbeddingError,
    InvalidEmbeddingError,
    LlmConnectionError,
    LlmRefusedError,
    LlmServerError,
    LlmTimeoutError,
)
from notifier.models import Paper
from notifier.relevance.corpus import text_of
from notifier.relevance.embedded import EmbeddedSpace
from tests.llm_server import LlmStandIn, embedding

KEY = "sk-embedding-key"
MODEL = "text-embedding-3-small"
TOPICS = ["speech recognition with transformers", "galaxy clusters and dark matter", "compilers for GPU kernels"]


def paper(number: int, topic: str | None = None) -> Paper:
    topic = topic or TOPICS[number % len(TOPICS)]
    return Paper(
        arxiv_id=f"2506.{number:05d}",
        version=1,
        title=f"On {topic}, part {number}",
        abstract=f"We study {topic} once more. Our {topic} method improves on earlier {topic} work.",
        authors=("Ada Lovelace",),
        categories=("cs.LG",),
    )


PAPERS = [paper(number) for number in range(1, 251)]


@pytest_asyncio.fixture
async def llm() -> AsyncIterator[LlmStandIn]:
    async with LlmStandIn(api_key=KEY) as server:
        yield server


@pytest_asyncio.fixture
async def client(llm: LlmStandIn) -> AsyncIterator[EmbeddingClient]:
    async with EmbeddingClient(url=llm.url, model=MODEL, api_key=KEY, concurrency=2) as made:
        yield made


# -- the setting ---------------------------------------------------------------------------------------------------


def test_an_embedding_model_alone_is_enough_for_the_llm_url(tmp_path):
    settings = load_settings({
        "NOTIFIER_DATA_DIR": str(tmp_path), "NOTIFIER_LLM_URL": "http://127.0.0.1:9/v1",
        "NOTIFIER_EMBEDDING_MODEL": MODEL,
    })  # fmt: skip
    assert settings.embeddings_enabled and not settings.summaries_enabled
    both = load_settings(
        {"NOTIFIER_DATA_DIR": str(tmp_path), "NOTIFIER_LLM_URL": "http://127.0.0.1:9/v1"},
        {"llm_model": "llama3.1:8b", "embedding_model": "nomic-embed-text"},
    )
    assert both.embeddings_enabled and both.summaries_enabled
    assert both.embedding_model == "nomic-embed-text"


def test_an_embedding_model_without_an_llm_url_is_an_error_naming_both(tmp_path):
    with pytest.raises(ConfigError, match="NOTIFIER_EMBEDDING_MODEL: set NOTIFIER_LLM_URL as well"):
        load_settings({"NOTIFIER_DATA_DIR": str(tmp_path), "NOTIFIER_EMBEDDING_MODEL": MODEL})
    with pytest.raises(ConfigError, match="--embedding-model: set NOTIFIER_LLM_URL as well"):
        load_settings({"NOTIFIER_DATA_DIR": str(tmp_path)}, {"embedding_model": MODEL})


def test_an_llm_url_without_any_model_is_an_error_naming_both_models(tmp_path):
    with pytest.raises(ConfigError, match=r"NOTIFIER_LLM_URL: set NOTIFIER_LLM_MODEL .* NOTIFIER_EMBEDDING_MODEL"):
        load_settings({"NOTIFIER_DATA_DIR": str(tmp_path), "NOTIFIER_LLM_URL": "http://127.0.0.1:9/v1"})


def test_without_an_embedding_model_nothing_is_embedded(tmp_path):
    settings = load_settings({
        "NOTIFIER_DATA_DIR": str(tmp_path), "NOTIFIER_LLM_URL": "http://127.0.0.1:9/v1",
        "NOTIFIER_LLM_MODEL": "llama3.1:8b",
    })  # fmt: skip
    assert settings.summaries_enabled and not settings.embeddings_enabled
    with pytest.raises(ValueError, match="no embedding model is configured"):
        EmbeddingClient.from_settings(settings)


# -- the client ----------------------------------------------------------------------------------------------------


async def test_papers_are_embedded_in_batches_of_a_hundred_in_order(llm, client):
    handed: list[tuple[list[str], np.ndarray]] = []

    await client.embed(PAPERS, lambda papers, vectors: handed.append(([p.arxiv_id for p in papers], vectors)))

    assert sorted(len(body["input"]) for body in llm.embedding_requests) == [50, BATCH, BATCH]
    assert all(body["model"] == MODEL for body in llm.embedding_requests)
    assert llm.embedding_inputs == len(PAPERS)
    by_id = {arxiv_id: row for ids, vectors in handed for arxiv_id, row in zip(ids, vectors, strict=True)}
    assert list(by_id) != [] and sorted(by_id) == [p.arxiv_id for p in PAPERS]
    for sent in (PAPERS[0], PAPERS[249]):
        assert np.allclose(by_id[sent.arxiv_id], embedding(text_of(sent), 1024), atol=1e-6)
    assert all(vectors.dtype == np.float32 for _, vectors in handed)


async def test_the_settings_give_the_url_key_model_timeout_and_concurrency(llm, tmp_path):
    settings = load_settings({
        "NOTIFIER_DATA_DIR": str(tmp_path), "NOTIFIER_LLM_URL": llm.url, "NOTIFIER_LLM_API_KEY": KEY,
        "NOTIFIER_EMBEDDING_MODEL": MODEL, "NOTIFIER_LLM_TIMEOUT": "0.3", "NOTIFIER_LLM_CONCURRENCY": "3",
    })  # fmt: skip
    async with EmbeddingClient.from_settings(settings) as client:
        vectors = await client.embed_texts(["speech recognition"])
        llm.embeddings_mode = "stall"
        with pytest.raises(EmbeddingError, match="timed out") as raised:
            await client.embed_texts(["speech recognition"])
    assert vectors.shape == (1, 1024) and client.concurrency == 3
    assert isinstance(raised.value.llm_error, LlmTimeoutError)


@pytest.mark.parametrize(
    ("mode", "error", "message"),
    [
        ("error", LlmServerError, r"server error \(500\)"),
        ("bad", None, r"invalid answer: 99 embeddings for 100 texts"),
    ],
)
async def test_each_failure_is_a_typed_error(llm, client, mode, error, message):
    llm.embeddings_mode = mode
    with pytest.raises(EmbeddingError, match=message) as raised:
        await client.embed(PAPERS[:BATCH], lambda papers, vectors: None)
    if error is None:
        assert isinstance(raised.value, InvalidEmbeddingError) and raised.value.llm_error is None
    else:
        assert isinstance(raised.value.llm_error, error)


async def test_a_non_numeric_embedding_is_an_invalid_answer(llm, client):
    llm.embeddings_mode = "non_numeric"
    with pytest.raises(InvalidEmbeddingError, match="invalid answer: the embeddings are not lists of numbers"):
        await client.embed_texts(["speech recognition", "galaxy clusters"])


async def test_a_wrong_key_is_refused_and_never_shown(llm):
    async with EmbeddingClient(url=llm.url, model=MODEL, api_key="sk-wrong-key") as client:
        with pytest.raises(EmbeddingError, match=r"refused \(401\)") as raised:
            await client.embed_texts(["speech"])
    assert isinstance(raised.value.llm_error, LlmRefusedError)
    assert "sk-wrong-key" not in str(raised.value)


async def test_an_unreachable_server_is_a_connection_failure():
    async with LlmStandIn() as llm:
        url = llm.url
    async with EmbeddingClient(url=url, model=MODEL) as client:
        with pytest.raises(EmbeddingError, match="connection failed") as raised:
            await client.embed(PAPERS[:3], lambda papers, vectors: None)
    assert isinstance(raised.value.llm_error, LlmConnectionError)


async def test_the_first_failure_ends_the_run_and_what_came_before_was_handed_over(llm, client):
    handed: list[int] = []
    await client.embed(PAPERS[:BATCH], lambda papers, vectors: handed.append(len(papers)))
    llm.embeddings_mode = "error"
    with pytest.raises(EmbeddingError):
        await client.embed(PAPERS, lambda papers, vectors: handed.append(len(papers)))
    assert handed == [BATCH]


# -- the embedding space (pure) ------------------------------------------------------------------------------------


def space_of(papers: list[Paper], **options: int) -> EmbeddedSpace:
    vectors = {p.key: np.array(embedding(text_of(p), 256), dtype=np.float32) * 3 for p in papers}
    return EmbeddedSpace(vectors, [p.key for p in papers], **options)


def test_a_paper_without_a_vector_cannot_be_placed():
    space = space_of(PAPERS[:30])
    unknown = paper(999)

    assert space.missing([PAPERS[0], unknown, PAPERS[1]]) == [unknown]
    assert space.features == 256 and len(space) == 30
    with pytest.raises(KeyError, match=r"2506\.00999v1"):
        space.matrix([unknown])


def test_rows_are_unit_vectors_so_that_dot_products_are_cosines():
    rows = space_of(PAPERS[:10]).matrix(PAPERS[:10]).rows
    assert np.allclose(np.linalg.norm(rows, axis=1), 1.0, atol=1e-6)


@pytest.mark.parametrize("trained", [False, True])
def test_papers_on_the_liked_topic_rank_first_and_name_a_liked_paper(trained):
    space = space_of(PAPERS)
    liked = [p for p in PAPERS[:60] if "speech" in p.title][:6]
    day = PAPERS[100:130]

    scores = space.profile(liked, trained=trained).scores(day)
    best = scores.best(top=10)

    assert all("speech" in day[number].title for number in best)
    similarity = scores.similarity(best[0])
    assert similarity.liked_id in {p.arxiv_id for p in liked} and 0 < similarity.score <= 1


def test_the_negatives_are_a_fixed_sample_of_the_recent_papers():
    one, two = space_of(PAPERS, negatives=20), space_of(PAPERS, negatives=20)
    liked = PAPERS[:6]
    assert np.array_equal(one.profile(liked).scores(PAPERS).values, two.profile(liked).scores(PAPERS).values)


def test_vectors_of_another_length_are_left_out_as_missing():
    vectors = {p.key: np.ones(8, dtype=np.float32) for p in PAPERS[:5]}
    vectors[PAPERS[5].key] = np.ones(4, dtype=np.float32)
    space = EmbeddedSpace(vectors, list(vectors))
    assert space.features == 8 and space.missing(PAPERS[:6]) == [PAPERS[5]]
