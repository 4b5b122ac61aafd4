"""The served python-backend models (tokenizer_model.py, encoder_model.py) run in-process against the fake
``triton_python_backend_utils`` (tests/fakes/pb_utils.py): initialize from a model config as Triton passes it, then
execute dynamic batches of requests. The same models behind a real Triton are tested in tests/e2e and
tests/reliability (e2e)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from export_helpers import bundled_dir
from fakes import pb_utils
from fakes.python_models import LOCATIONS, load_python_model, model_file

TOKEN_OUTPUTS = ["input_ids", "attention_mask", "token_type_ids"]


def args(repository: Path, config: dict, **extra) -> dict:
    """``initialize``'s argument as Triton gives it (strings; the config as JSON)."""
    return {"model_config": json.dumps(config), "model_repository": str(repository), "model_version": "1",
            "model_name": config["name"], "model_instance_kind": "CPU", "model_instance_device_id": "0", **extra}


def params(**values) -> dict:
    return {key: {"string_value": str(value)} for key, value in values.items()}


def text_array(*texts) -> np.ndarray:
    return np.array([[t.encode() if isinstance(t, str) else t] for t in texts], dtype=object).reshape(-1, 1)


def error_of(response) -> tuple[int, str]:
    assert response.has_error(), "expected an error response"
    return response.error().code(), response.error().message()


def test_the_model_files_are_found():
    assert model_file("encoder_model").parent in LOCATIONS and model_file("tokenizer_model").parent in LOCATIONS
    with pytest.raises(FileNotFoundError, match="no_such_model.py is in none of: exporter/triton/models"):
        model_file("no_such_model")


# -- tokenizer -------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tokenizer_repo(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tokenizer") / "minilm_tokenizer"
    (root / "1" / "tokenizer").mkdir(parents=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(bundled_dir() / name, root / "1" / "tokenizer" / name)
    return root


def make_tokenizer(repo: Path, max_seq_length=16, max_texts=4, max_bytes=64, outputs=TOKEN_OUTPUTS, **prompts):
    config = {"name": "minilm_tokenizer", "backend": "python", "max_batch_size": 8,
              "input": [{"name": "TEXT", "data_type": "TYPE_STRING", "dims": [1]}],
              "output": [{"name": n, "data_type": "TYPE_INT64", "dims": [-1]} for n in outputs],
              "parameters": params(tokenizer_dir="tokenizer", max_seq_length=max_seq_length,
                                   max_texts_per_request=max_texts, max_text_bytes=max_bytes, **prompts)}
    model = load_python_model("tokenizer_model").TritonPythonModel()
    model.initialize(args(repo, config))
    return model


@pytest.fixture(scope="module")
def reference_tokenizer(tokenizer_repo):
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_repo / "1" / "tokenizer" / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return tokenizer


def outputs(response) -> dict[str, np.ndarray]:
    assert not response.has_error(), response.error().message()
    return {t.name(): t.as_numpy() for t in response.output_tensors()}


def test_each_request_is_tokenized_and_padded_to_its_own_longest_text(tokenizer_repo, reference_tokenizer):
    model = make_tokenizer(tokenizer_repo)
    short, long = ["hi", "a cat"], ["A man is playing a guitar on the street corner."]
    first, second = model.execute([pb_utils.request(TEXT=text_array(*short)), pb_utils.request(TEXT=text_array(*long))])
    got = outputs(first)
    assert list(got) == TOKEN_OUTPUTS and all(a.dtype == np.int64 for a in got.values())
    ids = [reference_tokenizer.encode(t).ids for t in short]
    assert got["input_ids"].shape == (2, max(map(len, ids)))  # the longest of its own request, not of the batch
    assert got["input_ids"][0, :len(ids[0])].tolist() == ids[0] and got["attention_mask"][0].sum() == len(ids[0])
    assert outputs(second)["input_ids"][0].tolist() == reference_tokenizer.encode(long[0]).ids  # 12 tokens, whole


def test_texts_are_truncated_to_max_seq_length_and_keep_their_special_tokens(tokenizer_repo):
    model = make_tokenizer(tokenizer_repo, max_seq_length=8, max_bytes=1000)
    (response,) = model.execute([pb_utils.request(TEXT=text_array("word " * 40))])
    ids = outputs(response)["input_ids"]
    assert ids.shape == (1, 8) and ids[0, 0] == 101 and ids[0, -1] == 102  # [CLS] ... [SEP]


@pytest.mark.parametrize("bad, words", [
    (text_array("fine", b"\xff\xfe"), "TEXT[1] is not valid UTF-8 (byte 0: invalid start byte)"),
    (np.array([b"a", b"b"], dtype=object), "TEXT must have shape [n, 1], got [2]"),
    (text_array(*"abcde"), "5 texts in one request; allowed: at most 4"),
    (text_array("ok", "x" * 65), "TEXT[1] is 65 bytes; allowed: at most 64 bytes"),
    (np.array([[1]], dtype=object), "TEXT[0] is int, expected UTF-8 bytes"),
])
def test_a_bad_request_gets_invalid_arg_naming_the_element_and_its_neighbours_are_served(tokenizer_repo, bad, words):
    model = make_tokenizer(tokenizer_repo)
    before, failed, after = model.execute([pb_utils.request(TEXT=text_array("before")), pb_utils.request(TEXT=bad),
                                           pb_utils.request(TEXT=text_array("after"))])
    assert error_of(failed) == (pb_utils.TritonError.INVALID_ARG, words)
    assert outputs(before)["input_ids"].shape[0] == outputs(after)["input_ids"].shape[0] == 1


def test_str_elements_are_taken_as_utf8(tokenizer_repo, reference_tokenizer):
    model = make_tokenizer(tokenizer_repo)
    (response,) = model.execute([pb_utils.request(TEXT=np.array([["café"]], dtype=object))])
    assert outputs(response)["input_ids"][0].tolist() == reference_tokenizer.encode("café").ids


# -- prompts and token counts -----------------------------------------------------------------------------------------

PROMPTS = {"query": "query: ", "passage": "passage: "}


def prompted_tokenizer(repo: Path, default: str | None = "query", **kwargs):
    extra = {"default_prompt_name": default} if default else {}
    return make_tokenizer(repo, max_seq_length=64, max_bytes=1000, outputs=[*TOKEN_OUTPUTS, "TOKEN_COUNT"],
                          prompts=json.dumps(PROMPTS), **extra, **kwargs)


def ids_of(response) -> list[list[int]]:
    got = outputs(response)
    return [row[mask == 1].tolist() for row, mask in zip(got["input_ids"], got["attention_mask"])]


def test_prompts_are_prepended_as_sentence_transformers_does(tokenizer_repo, reference_tokenizer):
    """PROMPT_NAME and PROMPT are one per text; neither: the default prompt; PROMPT "" turns it off."""
    model = prompted_tokenizer(tokenizer_repo)
    texts = ["a cat", "two dogs"]
    named, explicit, default, bare = model.execute([
        pb_utils.request(TEXT=text_array(*texts), PROMPT_NAME=text_array("passage", "query")),
        pb_utils.request(TEXT=text_array(*texts), PROMPT=text_array("x: ", "y: ")),
        pb_utils.request(TEXT=text_array(*texts)),
        pb_utils.request(TEXT=text_array(*texts), PROMPT=text_array("", ""))])
    encode = reference_tokenizer.encode
    assert ids_of(named) == [encode("passage: a cat").ids, encode("query: two dogs").ids]
    assert ids_of(explicit) == [encode("x: a cat").ids, encode("y: two dogs").ids]
    assert ids_of(default) == [encode("query: " + t).ids for t in texts]
    assert ids_of(bare) == [encode(t).ids for t in texts]


def test_without_a_default_prompt_texts_are_taken_as_they_are(tokenizer_repo, reference_tokenizer):
    (response,) = prompted_tokenizer(tokenizer_repo, default=None).execute([pb_utils.request(TEXT=text_array("a cat"))])
    assert ids_of(response) == [reference_tokenizer.encode("a cat").ids]


def test_token_count_is_the_unpadded_length_after_prompt_and_truncation(tokenizer_repo, reference_tokenizer):
    model = prompted_tokenizer(tokenizer_repo)
    texts = ["hi", "word " * 100]
    (response,) = model.execute([pb_utils.request(TEXT=text_array(*texts))])
    counts = outputs(response)["TOKEN_COUNT"]
    want = [min(len(reference_tokenizer.encode("query: " + t).ids), 64) for t in texts]
    assert counts.dtype == np.int64 and counts.shape == (2, 1) and counts[:, 0].tolist() == want
    assert want[1] == 64 and want[0] == len(reference_tokenizer.encode("query: hi").ids)


@pytest.mark.parametrize("extra, words", [
    ({"PROMPT_NAME": text_array("query", "nope")},
     "PROMPT_NAME[1]='nope' is not a prompt of this model; allowed: 'query', 'passage'"),
    ({"PROMPT_NAME": text_array("query", "query"), "PROMPT": text_array("a", "b")},
     "give PROMPT_NAME or PROMPT, not both"),
    ({"PROMPT": text_array("a")}, "PROMPT has 1 rows; expected one per text (2)"),
    ({"PROMPT": text_array("ok", b"\xff")}, "PROMPT[1] is not valid UTF-8 (byte 0: invalid start byte)"),
])
def test_a_bad_prompt_is_invalid_arg_for_its_request_only(tokenizer_repo, extra, words):
    model = prompted_tokenizer(tokenizer_repo)
    failed, after = model.execute([pb_utils.request(TEXT=text_array("a", "b"), **extra),
                                   pb_utils.request(TEXT=text_array("after"))])
    assert error_of(failed) == (pb_utils.TritonError.INVALID_ARG, words)
    assert outputs(after)["TOKEN_COUNT"].shape == (1, 1)


def test_a_model_without_prompts_lists_none(tokenizer_repo):
    (response,) = make_tokenizer(tokenizer_repo).execute([pb_utils.request(TEXT=text_array("a"),
                                                                             PROMPT_NAME=text_array("query"))])
    assert error_of(response)[1] == "PROMPT_NAME[0]='query' is not a prompt of this model; allowed: none (this model " \
                                    "has no prompts)"


# -- encoder ---------------------------------------------------------------------------------------------------------

RUNTIME = '''
import numpy as np

class FakeEncoder:
    """Vectors that depend only on the unmasked tokens: [sum of ids, token count, width seen]; fails on id < 0."""

    calls = []

    def __init__(self, path, device="cpu", threads=None, memory_optimization=False, **options):
        self.path, self.device, self.threads = path, device, threads
        self.memory_optimization, self.options = memory_optimization, options

    def __call__(self, batch):
        ids, mask = batch["input_ids"], batch["attention_mask"]
        FakeEncoder.calls.append(ids.shape)
        if (ids < 0).any():
            raise IndexError("index -1 is out of bounds for the embedding table")
        return np.stack([(ids * mask).sum(1), mask.sum(1), np.full(len(ids), ids.shape[1])], 1).astype(np.float32)


# The runtimes' real out-of-memory errors: torch's exception class, ONNX Runtime's exception class and message.
TORCH_OOM = "CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 79.19 GiB"
ORT_OOM = ("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : Non-zero status code returned while running MatMul node. "
           "Name:'/0/auto_model/encoder/layer.0/attention/self/query/MatMul' Status Message: "
           "/onnxruntime_src/onnxruntime/core/framework/bfc_arena.cc:376 void* onnxruntime::BFCArena::"
           "AllocateRawInternal(size_t, bool, onnxruntime::Stream*, bool, onnxruntime::WaitNotificationFn) "
           "Failed to allocate memory for requested buffer of size 1610612736")


class TorchOomEncoder(FakeEncoder):
    """Runs out of memory on any call of more than two rows, as a GPU does on a batch too large for it."""

    def __call__(self, batch):
        if len(batch["input_ids"]) > 2:
            import torch
            raise torch.cuda.OutOfMemoryError(TORCH_OOM)
        return super().__call__(batch)


class OrtOomEncoder(FakeEncoder):
    def __call__(self, batch):
        if len(batch["input_ids"]) > 2:
            from onnxruntime.capi.onnxruntime_pybind11_state import RuntimeException
            raise RuntimeException(ORT_OOM)
        return super().__call__(batch)


class OomAtLoad(FakeEncoder):
    def __init__(self, path, device="cpu", threads=None, memory_optimization=False):
        import torch
        raise torch.cuda.OutOfMemoryError(TORCH_OOM)
'''


@pytest.fixture
def encoder_repo(tmp_path) -> Path:
    (tmp_path / "m_encoder" / "1").mkdir(parents=True)
    (tmp_path / "m_encoder" / "1" / "fake_encoder.py").write_text(RUNTIME)
    return tmp_path / "m_encoder"


def make_encoder(repo: Path, threads=2, runtime_class="FakeEncoder", memory_optimization=None, more=None, **extra):
    more = dict(more or {})
    if memory_optimization is not None:
        more["memory_optimization"] = memory_optimization
    config = {"name": "m_encoder", "backend": "python", "max_batch_size": 8,
              "input": [{"name": n, "data_type": "TYPE_INT64", "dims": [-1]} for n in TOKEN_OUTPUTS[:2]],
              "output": [{"name": "sentence_embedding", "data_type": "TYPE_FP32", "dims": [3]}],
              "parameters": params(runtime_loader="fake_encoder.py", runtime_class=runtime_class, threads=threads,
                                   **more)}
    model = load_python_model("encoder_model").TritonPythonModel()
    model.initialize(args(repo, config, **extra))
    return model


def token_request(*lengths, start=1):
    """One request of len(lengths) texts, right-padded to the longest: ids start, start+1, ... per text."""
    width = max(lengths)
    ids = np.zeros((len(lengths), width), np.int64)
    mask = np.zeros_like(ids)
    for row, n in enumerate(lengths):
        ids[row, :n] = np.arange(start, start + n)
        mask[row, :n] = 1
    return pb_utils.request(input_ids=ids, attention_mask=mask)


def vectors(response) -> np.ndarray:
    assert not response.has_error(), response.error().message()
    (tensor,) = response.output_tensors()
    assert tensor.name() == "sentence_embedding"
    return tensor.as_numpy()


def test_the_runtime_is_loaded_from_the_version_dir_with_device_and_threads(encoder_repo):
    cpu = make_encoder(encoder_repo)
    assert (cpu.encoder.path, cpu.encoder.device, cpu.encoder.threads) == (str(encoder_repo / "1"), "cpu", 2)
    gpu = make_encoder(encoder_repo, threads=0, model_instance_kind="GPU", model_instance_device_id="1")
    assert (gpu.encoder.device, gpu.encoder.threads) == ("cuda:1", None)
    assert not cpu.encoder.memory_optimization  # absent from configs written before the parameter existed


@pytest.mark.parametrize("value", ["true", "false"])
def test_the_plans_memory_setting_reaches_the_runtime(encoder_repo, value):
    model = make_encoder(encoder_repo, memory_optimization=value, model_instance_kind="GPU")
    assert model.encoder.memory_optimization is (value == "true")


def test_a_tensorrt_cache_reaches_gpu_instances_only(encoder_repo):
    """ONNX encoders built with --tensorrt; a CPU instance (a GPU build served on a CPU host) must still load,
    and the torch runner, which takes no such argument, never gets one from configs without it."""
    gpu = make_encoder(encoder_repo, more={"tensorrt_cache": "/cache/m"}, model_instance_kind="GPU")
    assert gpu.encoder.options == {"tensorrt_cache": "/cache/m"}
    assert make_encoder(encoder_repo, more={"tensorrt_cache": "/cache/m"}).encoder.options == {}
    assert make_encoder(encoder_repo, model_instance_kind="GPU").encoder.options == {}


def test_a_dynamic_batch_is_answered_per_request_as_if_each_ran_alone(encoder_repo):
    model = make_encoder(encoder_repo)
    requests = [token_request(3, 7), token_request(2), token_request(12, 1, 5, start=100)]
    batched = [vectors(r)[:, :2] for r in model.execute(requests)]
    alone = [vectors(model.execute([r])[0])[:, :2] for r in requests]
    for got, want in zip(batched, alone):
        np.testing.assert_array_equal(got, want)
    assert [v.shape[0] for v in batched] == [2, 1, 3]


def test_rows_run_in_length_buckets_trimmed_to_their_longest_text(encoder_repo):
    model = make_encoder(encoder_repo)
    model.max_batch_tokens = 16
    calls = type(model.encoder).calls
    calls.clear()
    (response,) = model.execute([token_request(2, 12, 3, 2)])
    assert sorted(calls) == [(1, 12), (3, 3)]  # [2, 2, 3] fit 3 x 3 <= 16; 12 runs alone, width 12
    np.testing.assert_array_equal(vectors(response)[:, 1], [2, 12, 3, 2])  # back in request order


def test_mismatched_token_tensors_are_invalid_arg_for_that_request_only(encoder_repo):
    model = make_encoder(encoder_repo)
    bad = pb_utils.request(input_ids=np.ones((2, 4), np.int64), attention_mask=np.ones((2, 5), np.int64))
    good, failed = model.execute([token_request(3), bad])
    code, message = error_of(failed)
    assert code == pb_utils.TritonError.INVALID_ARG and "must share one [batch, seq] shape" in message
    assert vectors(good).shape == (1, 3)


def test_a_runtime_failure_fails_only_the_request_that_caused_it(encoder_repo):
    model = make_encoder(encoder_repo)
    poisoned = token_request(4)
    poisoned.inputs()[0].as_numpy()[0, 1] = -1
    before, failed, after = model.execute([token_request(3), poisoned, token_request(5)])
    code, message = error_of(failed)
    assert code == pb_utils.TritonError.INTERNAL and message.startswith("the encoder failed on this request: index -1")
    np.testing.assert_array_equal(vectors(before)[:, :2], [[6, 3]])
    np.testing.assert_array_equal(vectors(after)[:, :2], [[15, 5]])


@pytest.mark.parametrize("runtime_class", ["TorchOomEncoder", "OrtOomEncoder"])
def test_out_of_memory_on_a_dynamic_batch_frees_the_cache_and_serves_each_request_alone(encoder_repo, runtime_class,
                                                                                         monkeypatch):
    import torch

    freed = []
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)  # as on a GPU, where the cache is real
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: freed.append(True))
    model = make_encoder(encoder_repo, runtime_class=runtime_class)
    model.max_batch_tokens = 1000  # one bucket: the batched call holds all four rows
    first, second = model.execute([token_request(3, 2), token_request(5, 1)])
    np.testing.assert_array_equal(vectors(first)[:, 1], [3, 2])
    np.testing.assert_array_equal(vectors(second)[:, 1], [5, 1])
    assert freed, "the device cache was not freed after the out-of-memory error"


@pytest.mark.parametrize("runtime_class", ["TorchOomEncoder", "OrtOomEncoder"])
def test_a_request_too_large_for_memory_gets_the_ways_to_fit_and_its_neighbours_are_served(encoder_repo,
                                                                                         runtime_class):
    from tritonclient.utils import InferenceServerException

    from client._common import Settings, make_translator
    from client.errors import ServerError

    model = make_encoder(encoder_repo, runtime_class=runtime_class)
    model.max_batch_tokens = 1000
    small, large = model.execute([token_request(4), token_request(3, 2, 6)])
    np.testing.assert_array_equal(vectors(small)[:, 1], [4])
    code, message = error_of(large)
    assert code == pb_utils.TritonError.INTERNAL
    assert message.startswith("the encoder, on this request, ran out of memory")
    assert "int8 or int4" in message and "max_batch_size" in message and "fewer instances" in message
    # what the client makes of it (the frontend answers INTERNAL with HTTP 500): the advice reaches the user
    translate = make_translator(Settings.create("localhost:8000", "m", None, 1, None, None), ())
    error = translate(InferenceServerException(message, status="500"))
    assert isinstance(error, ServerError) and "int8 or int4" in str(error)


def test_out_of_memory_at_load_fails_the_model_load_with_the_ways_to_fit(encoder_repo):
    with pytest.raises(RuntimeError, match=r"loading m_encoder on cuda:0 ran out of memory \(OutOfMemoryError: "
                                           r"CUDA out of memory.*int8 or int4.*max_batch_size"):
        make_encoder(encoder_repo, runtime_class="OomAtLoad", model_instance_kind="GPU")


def test_other_load_failures_are_not_called_out_of_memory(encoder_repo):
    with pytest.raises(AttributeError):
        make_encoder(encoder_repo, runtime_class="NoSuchEncoder")
