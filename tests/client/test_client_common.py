"""The client's shared rules without a server: input checks, batching, the model contract, settings, error mapping
and the retry policy (driven with real socket exceptions and real tritonclient exception objects)."""

from __future__ import annotations

import numpy as np
import pytest
from tritonclient.utils import InferenceServerException

from client import (
    ENV_MODEL,
    ENV_URL,
    InvalidInput,
    ModelInfo,
    ModelNotFound,
    Retry,
    ServerError,
    ServerUnavailable,
    Timeouts,
)
from client._common import (
    Replica,
    ReplicaSet,
    Settings,
    assemble,
    batch_size_for,
    choose_model,
    embedding_models,
    encode_texts,
    make_translator,
    ready_names,
    spans,
    split_url,
    split_urls,
)

ENSEMBLE = {
    "name": "minilm-fp32", "platform": "ensemble", "max_batch_size": 64,
    "input": [{"name": "TEXT", "data_type": "TYPE_STRING", "dims": [1]}],
    "output": [{"name": "EMBEDDING", "data_type": "TYPE_FP32", "dims": [384]}],
    "parameters": {"precision": {"string_value": "fp32"}, "route": {"string_value": "onnx-fp32"},
                   "dim": {"string_value": "384"}, "model": {"string_value": "sentence-transformers/all-MiniLM-L6-v2"},
                   "max_seq_length": {"string_value": "256"}},
}
TRANSPORT = (OSError,)


def settings(**overrides) -> Settings:
    values = {"url": "localhost:8000", "model": None, "batch_size": None, "max_concurrency": 4, "timeouts": None,
              "retry": None}
    values.update(overrides)
    return Settings.create(**values)


# -- input checks ---------------------------------------------------------------------------------------------------

def test_encode_texts_keeps_order_and_marks_single_strings():
    assert encode_texts(["b", "ä", ""]) == ([b"b", "ä".encode(), b""], False)
    assert encode_texts("one") == ([b"one"], True)
    assert encode_texts(("t",)) == ([b"t"], False)
    assert encode_texts(np.array(["x", "y"])) == ([b"x", b"y"], False)
    assert encode_texts(t for t in ("g",)) == ([b"g"], False)


@pytest.mark.parametrize("texts, index, words", [
    (["ok", None], 1, "texts[1] is NoneType"),
    (["ok", "fine", 3], 2, "texts[2] is int (3)"),
    ([b"raw"], 0, "texts[0] is bytes"),
    (["x\ud800"], 0, "texts[0] cannot be encoded as UTF-8"),
    (None, None, "got NoneType"),
    (b"raw", None, "got bytes"),
    ({"a": 1}, None, "must be ordered (rows come back in input order), got dict"),
    ({"a", "b"}, None, "must be ordered (rows come back in input order), got set"),
    (42, None, "got int"),
])
def test_encode_texts_names_the_offending_item(texts, index, words):
    with pytest.raises(InvalidInput) as caught:
        encode_texts(texts)
    assert caught.value.index == index
    assert words in str(caught.value)
    assert caught.value.server_message is None


# -- batching -------------------------------------------------------------------------------------------------------

def test_spans_cover_all_indices_in_order_with_bounded_size():
    parts = spans(10, 4)
    assert [list(r) for r in parts] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert spans(0, 4) == []
    assert [len(r) for r in spans(1000, 64)] == [64] * 15 + [40]


def test_batch_size_defaults_to_model_max_and_may_not_exceed_it():
    info = ModelInfo.from_config(ENSEMBLE)
    assert batch_size_for(settings(), info) == 64
    assert batch_size_for(settings(batch_size=8), info) == 8
    with pytest.raises(ValueError, match="batch_size=65 exceeds model 'minilm-fp32' max_batch_size=64"):
        batch_size_for(settings(batch_size=65), info)


def test_assemble_returns_rows_in_order_a_vector_for_one_text_and_zero_rows_for_none():
    info = ModelInfo.from_config(ENSEMBLE)
    parts = [(np.full((2, 384), 1, np.float32), None, "1"), (np.full((1, 384), 2, np.float32), None, "2")]
    assert assemble(parts, info, single=False).vectors[:, 0].tolist() == [1, 1, 2]
    assert assemble(parts, info, single=False).model_versions == ("1", "2")  # a rolling update mid-call
    assert assemble(parts[1:], info, single=True).vectors.shape == (384,)
    empty = assemble([], info, single=False)
    assert empty.vectors.shape == (0, 384) and empty.vectors.dtype == np.float32
    assert empty.token_counts.shape == (0,) and empty.total_tokens == 0


# -- the model contract ---------------------------------------------------------------------------------------------

def test_model_info_reads_the_ensemble_parameters():
    info = ModelInfo.from_config(ENSEMBLE)
    assert info == ModelInfo("minilm-fp32", 384, 64, "fp32", "onnx-fp32", "sentence-transformers/all-MiniLM-L6-v2",
                             max_seq_length=256)


def test_model_info_reads_prompts_truncate_dim_normalization_and_the_extended_tensors():
    config = {**ENSEMBLE,
              "input": [*ENSEMBLE["input"], *({"name": n, "data_type": "TYPE_STRING", "dims": [1], "optional": True}
                                              for n in ("PROMPT_NAME", "PROMPT"))],
              "output": [*ENSEMBLE["output"], {"name": "TOKEN_COUNT", "data_type": "TYPE_INT64", "dims": [1]}],
              "parameters": {**ENSEMBLE["parameters"], **{k: {"string_value": v} for k, v in {
                  "normalized": "false", "prompts": '{"query": "query: "}', "default_prompt_name": "query",
                  "truncate_dim": "128"}.items()}}}
    info = ModelInfo.from_config(config)
    assert (info.normalized, info.prompts, info.default_prompt_name, info.truncate_dim) == (
        False, {"query": "query: "}, "query", 128)
    assert info.prompt_inputs and info.token_counts
    old = ModelInfo.from_config(ENSEMBLE)  # built before the extension: defaults, and no prompts or counts to ask for
    assert (old.normalized, old.prompts, old.truncate_dim, old.prompt_inputs, old.token_counts) == (
        True, {}, None, False, False)
    config["parameters"]["prompts"] = {"string_value": "not json"}
    assert ModelInfo.from_config(config).prompts == {}


@pytest.mark.parametrize("change", [
    {"platform": ""}, {"backend": "python", "platform": ""}, {"max_batch_size": 0},
    {"input": [{"name": "input_ids", "data_type": "TYPE_INT64", "dims": [-1]}]},
    {"output": [{"name": "EMBEDDING", "data_type": "TYPE_FP16", "dims": [384]}]},
    {"output": [{"name": "EMBEDDING", "data_type": "TYPE_FP32", "dims": [-1]}], "parameters": {}},
])
def test_model_info_ignores_models_outside_the_contract(change):
    assert ModelInfo.from_config({**ENSEMBLE, **change}) is None


def test_ready_names_are_sorted_once_each_and_only_ready():
    index = [{"name": "b", "version": "1", "state": "READY"}, {"name": "a", "version": "1", "state": "READY"},
             {"name": "a", "version": "2", "state": "READY"}, {"name": "c", "state": "UNAVAILABLE", "reason": "x"},
             {"name": "d"}]
    assert ready_names(index) == ["a", "b"]


def test_models_unloaded_before_their_config_was_read_are_skipped_and_the_rest_kept():
    """None is what the clients pass for a model whose config request found it gone (unloaded after the index)."""
    other = {**ENSEMBLE, "name": "bge-int8"}
    tokenizer = {"name": "minilm-fp32_tokenizer", "backend": "python", "max_batch_size": 64}
    infos = embedding_models([other, None, tokenizer, ENSEMBLE])
    assert [info.name for info in infos] == ["bge-int8", "minilm-fp32"]
    assert embedding_models([None, None]) == []


def test_choose_model_takes_the_only_one_or_the_named_one_and_lists_the_rest():
    a, b = ModelInfo("a", 4, 8), ModelInfo("b", 4, 8)
    assert choose_model(None, [a]) is a
    assert choose_model("b", [a, b]) is b
    with pytest.raises(ModelNotFound, match="2 embedding models are served.*served embedding models: a, b") as caught:
        choose_model(None, [b, a])
    assert caught.value.available == ["a", "b"] and caught.value.model is None
    with pytest.raises(ModelNotFound, match="'c' is not served.*served embedding models: a, b"):
        choose_model("c", [a, b])
    with pytest.raises(ModelNotFound, match="no embedding model is served; served embedding models: none"):
        choose_model(None, [])


# -- settings -------------------------------------------------------------------------------------------------------

def test_settings_take_arguments_then_environment_then_defaults(monkeypatch):
    monkeypatch.delenv(ENV_URL, raising=False)
    monkeypatch.delenv(ENV_MODEL, raising=False)
    assert (settings(url=None).url, settings(url=None).model) == ("localhost:8000", None)
    monkeypatch.setenv(ENV_URL, "http://triton:9000/")
    monkeypatch.setenv(ENV_MODEL, "minilm-int8")
    assert (settings(url=None).url, settings(url=None).model) == ("triton:9000", "minilm-int8")
    assert settings(url="other:1", model="m").model == "m"


def test_split_url_accepts_schemes_and_rejects_garbage():
    assert split_url("https://h:443/base/") == ("h:443/base", True)
    assert split_url("h:8000") == ("h:8000", False)
    for bad in ("", "ftp://h:1", "http://a b"):
        with pytest.raises(ValueError, match="expected host:port"):
            split_url(bad)


@pytest.mark.parametrize("make, words", [
    (lambda: settings(batch_size=0), "batch_size=0: expected an int >= 1"),
    (lambda: settings(max_concurrency=2.5), "max_concurrency=2.5"),
    (lambda: Timeouts(connect=0), "Timeouts.connect=0"),
    (lambda: Retry(attempts=0), "Retry.attempts=0"),
    (lambda: Retry(backoff=-1), "Retry.backoff=-1"),
])
def test_bad_settings_name_the_value(make, words):
    with pytest.raises(ValueError, match=words.replace("[", r"\[").replace(".", r"\.")):
        make()


# -- error mapping --------------------------------------------------------------------------------------------------

def translate(exc, offset=0):
    return make_translator(Replica("localhost:8000"), TRANSPORT, model="m", offset=offset)(exc)


def test_server_400_naming_a_text_becomes_invalid_input_at_the_callers_index():
    message = "in ensemble 'm', TEXT[3] is 70000 bytes; allowed: at most 65536 bytes"
    error = translate(InferenceServerException(message, status="400"), offset=128)
    assert isinstance(error, InvalidInput) and error.index == 131
    assert error.server_message == message and "texts[131]" in str(error)


@pytest.mark.parametrize("exc, kind", [
    (InferenceServerException("Request for unknown model: 'm' is not found", status="404"), ModelNotFound),
    (InferenceServerException("Request for unknown model: 'm' has no available versions", status="400"),
     ModelNotFound),
    (InferenceServerException("Server not ready: UNAVAILABLE", status="503"), ServerUnavailable),
    (InferenceServerException("encoder crashed", status="500"), ServerError),
    (InferenceServerException("batch-size must be <= 64", status="400"), InvalidInput),
    (ConnectionRefusedError(111, "Connection refused"), ServerUnavailable),
    (TimeoutError("timed out"), ServerUnavailable),
])
def test_exceptions_map_to_typed_errors(exc, kind):
    assert type(translate(exc)) is kind


def test_programming_errors_are_not_translated():
    assert translate(KeyError("x")) is None


# -- retry policy ---------------------------------------------------------------------------------------------------

def translator_for(replica: Replica):
    return make_translator(replica, TRANSPORT, model="m")


def run_with_retries(retry: Retry, failures: list[Exception], replicas: ReplicaSet | None = None,
                     used: list[str] | None = None) -> tuple[str, int]:
    """Drive Retry.attempts_for the way both clients do; the request raises ``failures`` in turn, then succeeds.
    ``used`` collects the replica each try went to."""
    calls = 0
    replicas = replicas or ReplicaSet(settings().replicas)
    for attempt in retry.attempts_for("test", translator_for, replicas):
        with attempt:
            calls += 1
            if used is not None:
                used.append(attempt.replica.url)
            if failures:
                raise failures.pop(0)
            return "ok", calls
    raise AssertionError("unreachable")


def test_retryable_failures_are_retried_until_success():
    assert run_with_retries(Retry(attempts=3, backoff=0), [ConnectionResetError(), TimeoutError()]) == ("ok", 3)


def test_retries_stop_after_the_configured_attempts_with_server_unavailable():
    with pytest.raises(ServerUnavailable, match="ConnectionRefusedError") as caught:
        run_with_retries(Retry(attempts=2, backoff=0), [ConnectionRefusedError()] * 3)
    assert isinstance(caught.value.__cause__, ConnectionRefusedError)


@pytest.mark.parametrize("status", ["400", "404", "500"])
def test_client_and_server_errors_are_never_retried(status):
    failures = [InferenceServerException("no", status=status), InferenceServerException("no", status=status)]
    with pytest.raises((InvalidInput, ModelNotFound, ServerError)):
        run_with_retries(Retry(attempts=5, backoff=0), failures)
    assert len(failures) == 1  # exactly one request was made


# -- replicas -------------------------------------------------------------------------------------------------------

class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_split_urls_takes_lists_and_commas_and_rejects_empty_or_repeated_entries(monkeypatch):
    assert split_urls("a:1, https://b:2") == (Replica("a:1"), Replica("b:2", True))
    assert split_urls(["a:1", "b:2"]) == (Replica("a:1"), Replica("b:2"))
    monkeypatch.setenv(ENV_URL, "t1:8000,t2:8000")
    assert settings(url=None).replicas == (Replica("t1:8000"), Replica("t2:8000"))
    assert settings(url=None).url == "t1:8000, t2:8000"
    for bad, words in (("a:1,,b:2", "none empty"), ([], "none empty"), ("a:1,a:1", r"\['a:1'\] listed twice")):
        with pytest.raises(ValueError, match=words):
            split_urls(bad)


def test_replica_set_spreads_requests_takes_failed_replicas_out_and_probes_them_back():
    clock = Clock()
    replicas = ReplicaSet([Replica("a:1"), Replica("b:1"), Replica("c:1")], cooldown=1.0, max_cooldown=4.0,
                          clock=clock)
    assert [replicas.pick() for _ in range(6)] == [0, 1, 2, 0, 1, 2]
    replicas.failed(1, ConnectionRefusedError())
    assert [replicas.pick() for _ in range(4)] == [0, 2, 0, 2]
    assert replicas.states() == {"a:1": True, "b:1": False, "c:1": True}
    clock.now = 1.0  # the cooldown is over: b gets the next request as a probe
    assert [replicas.pick() for _ in range(3)] == [0, 1, 2]
    replicas.failed(1, ConnectionRefusedError())  # the probe failed: out twice as long
    clock.now = 2.9
    assert 1 not in {replicas.pick() for _ in range(6)}
    clock.now = 3.0
    assert 1 in {replicas.pick() for _ in range(3)}
    replicas.succeeded(1)
    assert replicas.states()["b:1"] is True
    for _ in range(10):  # the cooldown doubles up to max_cooldown
        replicas.failed(2, TimeoutError())
    clock.now += 4.0
    assert replicas.states()["c:1"] is True


def test_when_every_replica_is_out_the_one_back_soonest_is_tried():
    clock = Clock()
    replicas = ReplicaSet([Replica("a:1"), Replica("b:1")], cooldown=1.0, clock=clock)
    replicas.failed(0, TimeoutError())
    replicas.failed(0, TimeoutError())
    replicas.failed(1, TimeoutError())
    assert replicas.pick() == 1 and not replicas.available(set())


def test_a_failed_request_moves_to_another_replica_at_once_and_counts_no_retry():
    replicas = ReplicaSet([Replica("a:1"), Replica("b:1")])
    used: list[str] = []
    # one try per replica on top of Retry.attempts: attempts=1 still fails over once, without sleeping
    assert run_with_retries(Retry(attempts=1, backoff=10), [ConnectionRefusedError()], replicas, used) == ("ok", 2)
    assert used == ["a:1", "b:1"]
    assert replicas.states() == {"a:1": False, "b:1": True}
    # the next requests avoid the replica that is out
    used.clear()
    for _ in range(3):
        run_with_retries(Retry(attempts=1), [], replicas, used)
    assert used == ["b:1"] * 3


def test_client_errors_are_not_failed_over():
    replicas = ReplicaSet([Replica("a:1"), Replica("b:1")])
    failures = [InferenceServerException("bad text", status="400")]
    with pytest.raises(InvalidInput):
        run_with_retries(Retry(attempts=3, backoff=0), failures, replicas)
    assert replicas.states() == {"a:1": True, "b:1": True}, "a bad request says nothing about the replica"


def test_backoff_grows_exponentially_with_bounded_jitter():
    retry = Retry(attempts=10, backoff=0.1, max_backoff=1.0, jitter=0.5)
    down = ServerUnavailable("down")
    for attempt, base in [(0, 0.1), (1, 0.2), (2, 0.4), (3, 0.8), (4, 1.0), (8, 1.0)]:
        delays = [retry.next_delay(down, attempt) for _ in range(50)]
        assert all(base <= d <= base * 1.5 for d in delays)
        assert len(set(delays)) > 1  # jittered
    assert retry.next_delay(down, 9) is None
    assert retry.next_delay(InvalidInput("x", index=0, reason="x"), 0) is None
