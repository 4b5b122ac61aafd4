"""The extended serving contract on a real Triton: prompts, truncated dimensions and token counts.

Two servers, both session fixtures (tests/conftest.py): ``prompted_model`` serves a tiny random model whose
config_sentence_transformers.json has prompts and a default prompt name, with models-file overrides (one more prompt,
a default ``truncate_dim``); ``triton_server`` serves the bundled all-MiniLM-L6-v2, on which callers of the original
contract (TEXT in, EMBEDDING only out) must see no change. Every vector is compared with sentence-transformers on the
same weights.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import tritonclient.http as httpclient
from conftest import PROMPTED, PROMPTED_OVERRIDES
from tritonclient.utils import InferenceServerException

from client import AsyncEmbeddingClient, EmbeddingClient, InvalidInput

pytestmark = pytest.mark.slow

TEXTS = ["What is the capital of France?", "Paris is the capital of France.", "", "naïve café ünïcödé",
         " ".join(["a long text that the tokenizer must truncate"] * 30)]  # > 64 tokens: cut at max_seq_length
FP32_COSINE = 0.9999


def bytes_input(name: str, values: list[str]) -> httpclient.InferInput:
    data = np.array([v.encode("utf-8") for v in values], dtype=object).reshape(-1, 1)
    tensor = httpclient.InferInput(name, list(data.shape), "BYTES")
    tensor.set_data_from_numpy(data)
    return tensor


def raw_infer(url: str, model: str, texts: list[str], outputs: tuple[str, ...] = ("EMBEDDING",), **prompts: str):
    """A plain tritonclient call, as an application that never saw this project's client would make it."""
    inputs = [bytes_input("TEXT", texts)] + [bytes_input(name, [value] * len(texts)) for name, value in prompts.items()]
    with httpclient.InferenceServerClient(url) as client:
        return client.infer(model, inputs, outputs=[httpclient.InferRequestedOutput(o) for o in outputs])


def min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return float(((a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))).min())


@pytest.fixture(scope="module")
def st(prompted_model):
    """sentence-transformers on the same directory, with the same overrides as the models file gave the build."""
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(prompted_model.model_dir), device="cpu", **PROMPTED_OVERRIDES)


@pytest.fixture(scope="module")
def client(prompted_model):
    with EmbeddingClient(prompted_model.server.http_url) as c:
        yield c


def test_model_info_carries_the_prompts_truncate_dim_and_normalization(client, prompted_model):
    info = client.model_info()
    assert info.name == prompted_model.name and info.dim == 64 and info.normalized
    assert info.prompts == {**PROMPTED["prompts"], **PROMPTED_OVERRIDES["prompts"]}
    assert info.default_prompt_name == "query" and info.truncate_dim == 32
    assert info.prompt_inputs and info.token_counts


@pytest.mark.parametrize("prompt_name", ["query", "passage", "title"])
def test_a_named_prompt_gives_sentence_transformers_vectors(client, st, prompt_name):
    got = client.embed(TEXTS, prompt_name=prompt_name, dimensions=64)
    want = st.encode(TEXTS, prompt_name=prompt_name, truncate_dim=64)
    assert got.shape == (len(TEXTS), 64)
    assert min_cosine(got, want) >= FP32_COSINE


def test_default_prompt_and_default_truncate_dim_apply_when_the_call_names_none(client, st):
    got = client.embed(TEXTS)
    want = st.encode(TEXTS, normalize_embeddings=True)  # default prompt "query", truncate_dim 32
    assert got.shape == want.shape == (len(TEXTS), 32)
    assert min_cosine(got, want) >= FP32_COSINE
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)  # re-normalized after truncation
    bare = client.embed(TEXTS, prompt="")  # an explicit empty prompt turns the default off, as in ST
    assert min_cosine(bare, st.encode(TEXTS, prompt="", normalize_embeddings=True)) >= FP32_COSINE
    assert min_cosine(bare, got) < 0.999  # the prompt really changed the vectors


@pytest.mark.parametrize("k", [1, 8, 48])
def test_dimensions_k_equals_sentence_transformers_truncate_dim(client, st, k):
    got = client.embed(TEXTS, prompt="custom prefix: ", dimensions=k)
    want = st.encode(TEXTS, prompt="custom prefix: ", truncate_dim=k, normalize_embeddings=True)
    assert got.shape == (len(TEXTS), k)
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_a_raw_tritonclient_call_gets_the_prompted_vectors(prompted_model, st):
    url, name = prompted_model.server.http_url, prompted_model.name
    by_name = raw_infer(url, name, TEXTS, PROMPT_NAME="passage").as_numpy("EMBEDDING")
    assert min_cosine(by_name, st.encode(TEXTS, prompt_name="passage", truncate_dim=64)) >= FP32_COSINE
    explicit = raw_infer(url, name, TEXTS, PROMPT="passage: ").as_numpy("EMBEDDING")
    np.testing.assert_allclose(explicit, by_name, atol=1e-6)
    default = raw_infer(url, name, TEXTS).as_numpy("EMBEDDING")  # the full vector; the default prompt applied
    assert default.shape == (len(TEXTS), 64)
    assert min_cosine(default, st.encode(TEXTS, truncate_dim=64)) >= FP32_COSINE


def test_an_unknown_prompt_name_is_refused_listing_the_prompts(client, prompted_model):
    with pytest.raises(InvalidInput, match="prompt_name='nope' is not a prompt") as local:
        client.embed(["x"], prompt_name="nope")
    with pytest.raises(InferenceServerException) as raw:
        raw_infer(prompted_model.server.http_url, prompted_model.name, ["x", "y"], PROMPT_NAME="nope")
    assert raw.value.status() == "400"
    for name in ("query", "passage", "title"):
        assert repr(name) in raw.value.message() and repr(name) in str(local.value)
    assert client.embed(["still served"]).shape == (1, 32)  # the server keeps serving


@pytest.mark.parametrize("options, words", [
    ({"dimensions": 0}, "dimensions=0 .* from 1 to 64"), ({"dimensions": 65}, "dimensions=65 .* from 1 to 64"),
    ({"prompt_name": "query", "prompt": "q: "}, "prompt_name or prompt, not both")])
def test_bad_options_are_refused_before_any_request(client, options, words):
    with pytest.raises(InvalidInput, match=words):
        client.embed(["x"], **options)


def test_token_counts_are_the_tokenizers_after_prompt_and_truncation(client, st, prompted_model):
    tokenizer = st.tokenizer
    want = [len(tokenizer("passage: " + t, truncation=True, max_length=st.max_seq_length)["input_ids"]) for t in TEXTS]
    assert max(want) == st.max_seq_length == 64  # the long text is cut
    usage = client.embed_with_usage(TEXTS, prompt_name="passage")
    assert usage.token_counts.tolist() == want and usage.total_tokens == sum(want)
    assert usage.token_counts.dtype == np.int64 and usage.vectors.shape == (len(TEXTS), 32)
    raw = raw_infer(prompted_model.server.http_url, prompted_model.name, TEXTS, ("TOKEN_COUNT",),
                    PROMPT_NAME="passage")
    assert raw.as_numpy("TOKEN_COUNT").reshape(-1).tolist() == want


def test_concurrent_requests_with_and_without_prompts_get_their_own_prompts(client, prompted_model):
    """The tokenizer's dynamic batcher may batch requests with and without PROMPT_NAME: each keeps its own."""
    from concurrent.futures import ThreadPoolExecutor

    cases = [{}, {"prompt_name": "passage"}, {"prompt": ""}, {"prompt_name": "title"}] * 4
    alone = [client.embed(TEXTS, dimensions=64, **case) for case in cases[:4]]
    with EmbeddingClient(prompted_model.server.http_url, max_concurrency=8) as busy, ThreadPoolExecutor(8) as pool:
        together = list(pool.map(lambda case: busy.embed(TEXTS, dimensions=64, **case), cases))
    for i, got in enumerate(together):
        np.testing.assert_allclose(got, alone[i % 4], atol=1e-5)


def test_the_async_twin_gives_the_same_vectors_and_counts(client, prompted_model):
    async def run():
        async with AsyncEmbeddingClient(prompted_model.server.http_url) as aclient:
            return await aclient.embed_with_usage(TEXTS, model=prompted_model.name, prompt_name="title", dimensions=8)

    got = asyncio.run(run())
    want = client.embed_with_usage(TEXTS, prompt_name="title", dimensions=8)
    np.testing.assert_allclose(got.vectors, want.vectors, atol=1e-6)
    assert got.token_counts.tolist() == want.token_counts.tolist()


# -- the bundled model on the shared server: the original contract is unchanged ----------------------------------------

def test_embedding_only_callers_are_unaffected_and_token_counts_match_the_tokenizer(triton_server, served_model):
    from transformers import AutoTokenizer

    from exporter.models import DEFAULT_MODEL, resolve_model_dir

    name = served_model("fp32")
    texts = ["hello world", " ".join(["word"] * 400)]  # the second is cut at 256 tokens
    only = raw_infer(triton_server.http_url, name, texts)
    assert only.as_numpy("TOKEN_COUNT") is None  # not asked for, not sent
    both = raw_infer(triton_server.http_url, name, texts, ("EMBEDDING", "TOKEN_COUNT"))
    np.testing.assert_array_equal(only.as_numpy("EMBEDDING"), both.as_numpy("EMBEDDING"))
    tokenizer = AutoTokenizer.from_pretrained(str(resolve_model_dir(DEFAULT_MODEL)))
    want = [len(ids) for ids in tokenizer(texts, truncation=True, max_length=256)["input_ids"]]
    assert both.as_numpy("TOKEN_COUNT").reshape(-1).tolist() == want == [4, 256]
    with EmbeddingClient(triton_server.http_url, model=name) as c:
        info = c.model_info()
        assert info.normalized and info.prompts == {} and info.default_prompt_name is None and info.truncate_dim is None
        usage = c.embed_with_usage(texts)
        assert usage.token_counts.tolist() == want
        np.testing.assert_allclose(usage.vectors, only.as_numpy("EMBEDDING"), atol=1e-6)
