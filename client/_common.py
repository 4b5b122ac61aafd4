"""What the sync and async clients share: settings, input checks, batching, the model contract, error mapping and
the retry policy. Everything here is free of I/O, so the twins in ``_sync.py`` / ``_async.py`` only differ in how
they wait (threads vs. coroutines) and the same rules apply to both.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence, Set
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import numpy as np

from ._triton import InferenceServerClientPlugin, InferenceServerException, httpclient
from .errors import EmbeddingError, InvalidInput, ModelNotFound, ServerError, ServerUnavailable

log = logging.getLogger(__name__)

ENV_URL = "EMB_PROVIDER_TRITON_URL"
ENV_MODEL = "EMB_PROVIDER_MODEL"
DEFAULT_URL = "localhost:8000"
DEFAULT_MAX_CONCURRENCY = 4

# The serving contract written by ``exporter build``: an ensemble TEXT (BYTES, [1]) -> EMBEDDING (FP32, [dim]), with
# the optional inputs PROMPT_NAME / PROMPT (BYTES, [1], one per text) and the extra output TOKEN_COUNT (INT64, [1]).
TEXT_INPUT = "TEXT"
EMBEDDING_OUTPUT = "EMBEDDING"
PROMPT_NAME_INPUT = "PROMPT_NAME"
PROMPT_INPUT = "PROMPT"
TOKEN_COUNT_OUTPUT = "TOKEN_COUNT"

_UNKNOWN_MODEL = re.compile(r"unknown model", re.IGNORECASE)
_SERVER_TEXT_INDEX = re.compile(r"TEXT\[(\d+)\]")  # how the tokenizer model names the offending element


@dataclass(frozen=True)
class Timeouts:
    """Seconds to wait for a TCP connection and for a whole request (send, inference, response) per attempt.

    The async client can only bound the whole request (tritonclient.http.aio exposes one aiohttp total timeout),
    so there ``connect`` is covered by ``request``.
    """

    connect: float = 5.0
    request: float = 60.0

    def __post_init__(self) -> None:
        for name in ("connect", "request"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"Timeouts.{name}={value!r}: expected a number of seconds > 0")


@dataclass(frozen=True)
class Retry:
    """Exponential backoff with jitter, applied only to retryable failures (``ServerUnavailable``: connection
    refused/reset, timeouts, HTTP 503). ``attempts`` counts the first try: 1 disables retries.

    Delay before retry k (0-based) is ``min(max_backoff, backoff * 2**k) * (1 + U(0, jitter))``: the jitter spreads
    clients that failed together so they do not hit a restarting server in lockstep.
    """

    attempts: int = 4
    backoff: float = 0.1
    max_backoff: float = 2.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        if not isinstance(self.attempts, int) or isinstance(self.attempts, bool) or self.attempts < 1:
            raise ValueError(f"Retry.attempts={self.attempts!r}: expected an int >= 1 (1 = no retries)")
        for name in ("backoff", "max_backoff", "jitter"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
                raise ValueError(f"Retry.{name}={value!r}: expected a number >= 0")

    def next_delay(self, error: EmbeddingError, attempt: int, limit: int | None = None) -> float | None:
        """Seconds to sleep before retrying after ``error`` on 0-based ``attempt`` of ``limit`` tries (default
        :attr:`attempts`); None means give up."""
        if not isinstance(error, ServerUnavailable) or attempt + 1 >= (limit or self.attempts):
            return None
        base = min(self.max_backoff, self.backoff * 2 ** attempt)
        return base * (1.0 + random.uniform(0.0, self.jitter))

    def attempts_for(self, what: str, translate: Callable[[Replica], Callable[[Exception], EmbeddingError | None]],
                     replicas: ReplicaSet) -> Iterator[Attempt]:
        """Yield one :class:`Attempt` per try, each on the replica :meth:`ReplicaSet.pick` chose. Use as::

            for attempt in retry.attempts_for("infer", translate, replicas):
                with attempt:
                    return do_request(attempt.replica)
                time.sleep(attempt.delay)   # or: await asyncio.sleep(attempt.delay)

        With several replicas a failed try moves to another one at once (no sleep while an untried replica is in),
        on top of :attr:`attempts`; the backoff applies once every replica has failed. The last attempt (or any
        non-retryable failure) raises the translated error from the context manager.
        """
        tried: set[int] = set()
        limit = self.attempts + len(replicas) - 1
        for number in range(limit):
            if len(tried) >= len(replicas):
                tried.clear()  # every replica failed once: a new round, after a backoff
            index = replicas.pick(tried)
            yield Attempt(self, number, what, translate(replicas.replicas[index]), replicas, index, tried, limit)


@dataclass
class Attempt:
    """One try of a request on one replica: a context manager that turns transport/server exceptions into the
    client's errors, tells the :class:`ReplicaSet` how the replica did, and swallows the error only when the policy
    says to retry (then ``delay`` holds the backoff, 0 when another replica can take the request now)."""

    retry: Retry
    number: int
    what: str
    translate: Callable[[Exception], EmbeddingError | None]
    replicas: ReplicaSet
    index: int
    tried: set[int]
    limit: int
    delay: float = field(default=0.0, init=False)

    @property
    def replica(self) -> Replica:
        return self.replicas.replicas[self.index]

    def __enter__(self) -> Attempt:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> bool:
        if exc is None:
            self.replicas.succeeded(self.index)
            return False
        if not isinstance(exc, Exception):
            return False  # KeyboardInterrupt/CancelledError: never swallowed
        error = self.translate(exc)
        if error is None:
            return False  # not a server/transport problem: a bug to surface as is
        if isinstance(error, ServerUnavailable):
            self.replicas.failed(self.index, error)
        delay = self.retry.next_delay(error, self.number, self.limit)
        if delay is None:
            if error is exc:
                return False
            raise error from exc
        self.tried.add(self.index)
        if self.replicas.available(self.tried):
            log.info("%s failed on %s: %s; trying another replica", self.what, self.replica.url, error)
            delay = 0.0
        else:
            log.warning("%s failed (attempt %d of %d): %s; retrying in %.2fs",
                        self.what, self.number + 1, self.limit, error, delay)
        self.delay = delay
        return True


@dataclass(frozen=True)
class Replica:
    """One Triton server of the deployment: ``host:port[/base]`` as tritonclient takes it, and whether to use TLS."""

    url: str
    ssl: bool = False


class ReplicaSet:
    """Where each request goes: round robin over the replicas that are in; a replica that failed with a retryable
    error (connection refused/reset, timeout, 503) is out for ``cooldown`` seconds, doubling with each consecutive
    failure up to ``max_cooldown``. When its time is up it gets the next request as a probe: a success brings it
    back in, a failure sends it out for longer (and the request moves to another replica at once). I/O-free and
    thread-safe, shared by the sync twin's worker threads and the async twin's tasks.
    """

    def __init__(self, replicas: Sequence[Replica], *, cooldown: float = 1.0, max_cooldown: float = 30.0,
                 clock: Callable[[], float] = time.monotonic):
        self.replicas = tuple(replicas)
        self.cooldown, self.max_cooldown, self._clock = cooldown, max_cooldown, clock
        self._failures = [0] * len(self.replicas)
        self._out_until = [0.0] * len(self.replicas)
        self._next = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.replicas)

    def pick(self, avoid: Set[int] = frozenset()) -> int:
        """The next replica that is in (or due for a probe) and not in ``avoid``; when none is, the one that comes
        back soonest: trying a replica beats failing without trying."""
        with self._lock:
            now = self._clock()
            count = len(self.replicas)
            for step in range(count):
                index = (self._next + step) % count
                if index not in avoid and self._out_until[index] <= now:
                    self._next = index + 1
                    return index
            others = [i for i in range(count) if i not in avoid] or list(range(count))
            return min(others, key=lambda i: self._out_until[i])

    def available(self, avoid: Set[int]) -> bool:
        """Whether a replica outside ``avoid`` is in (or due for a probe) now."""
        with self._lock:
            now = self._clock()
            return any(i not in avoid and self._out_until[i] <= now for i in range(len(self.replicas)))

    def failed(self, index: int, error: Exception) -> None:
        with self._lock:
            self._failures[index] += 1
            wait = min(self.max_cooldown, self.cooldown * 2 ** (self._failures[index] - 1))
            self._out_until[index] = self._clock() + wait
        if len(self.replicas) > 1:
            log.warning("replica %s is out for %.1fs: %s", self.replicas[index].url, wait, error)

    def succeeded(self, index: int) -> None:
        with self._lock:
            back = self._failures[index] > 0
            self._failures[index], self._out_until[index] = 0, 0.0
        if back and len(self.replicas) > 1:
            log.info("replica %s is back in", self.replicas[index].url)

    def states(self) -> dict[str, bool]:
        """Replica URL -> whether it is in now (for logs, health endpoints and tests)."""
        with self._lock:
            now = self._clock()
            return {r.url: self._out_until[i] <= now for i, r in enumerate(self.replicas)}


@dataclass(frozen=True)
class Settings:
    """Resolved client configuration (arguments, then environment, then defaults)."""

    replicas: tuple[Replica, ...]  # one per Triton server; requests are spread over them
    model: str | None
    batch_size: int | None
    max_concurrency: int
    timeouts: Timeouts
    retry: Retry
    headers: tuple[tuple[str, str], ...] = ()  # sent with every request (e.g. Authorization for a proxy)

    @property
    def url(self) -> str:
        """The replicas' addresses, for messages: ``host:port`` or ``host1:port, host2:port``."""
        return ", ".join(r.url for r in self.replicas)

    @classmethod
    def create(cls, url: str | Sequence[str] | None, model: str | None, batch_size: int | None,
               max_concurrency: int, timeouts: Timeouts | None, retry: Retry | None,
               headers: Mapping[str, str] | None = None) -> Settings:
        replicas = split_urls(url or os.environ.get(ENV_URL) or DEFAULT_URL)
        for name, value in (("batch_size", batch_size), ("max_concurrency", max_concurrency)):
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise ValueError(f"{name}={value!r}: expected an int >= 1")
        pairs = tuple((headers or {}).items())
        for key, value in pairs:
            if not isinstance(key, str) or not isinstance(value, str) or not key or "\n" in key + value:
                raise ValueError(f"header {key!r}: {value!r}: expected non-empty str names and str values "
                                 "without line breaks")
        return cls(replicas, model or os.environ.get(ENV_MODEL) or None, batch_size, max_concurrency,
                   timeouts or Timeouts(), retry or Retry(), pairs)

    def attach_headers(self, transport: Any) -> Any:
        """Make ``transport`` (a tritonclient sync or aio client) send :attr:`headers` with every request."""
        if self.headers:
            transport.register_plugin(_HeaderPlugin(dict(self.headers)))
        return transport


class _HeaderPlugin(InferenceServerClientPlugin):
    """tritonclient's hook for per-request headers: how an authenticating proxy in front of Triton gets its token."""

    def __init__(self, headers: dict[str, str]):
        self._headers = headers

    def __call__(self, request: Any) -> None:
        request.headers.update(self._headers)


def split_urls(urls: str | Sequence[str]) -> tuple[Replica, ...]:
    """One or several Triton URLs (a list, or one string with commas, as ``EMB_PROVIDER_TRITON_URL`` takes them)
    -> the replicas, each checked by :func:`split_url`; empty entries and duplicates are errors."""
    parts = urls.split(",") if isinstance(urls, str) else list(urls)
    if not parts or any(not isinstance(p, str) or not p.strip() for p in parts):
        raise ValueError(f"Triton URLs {urls!r}: expected host:port entries separated by commas, none empty "
                         f"(argument or {ENV_URL})")
    replicas = tuple(Replica(*split_url(part)) for part in parts)
    seen = [r.url for r in replicas]
    if len(set(seen)) != len(seen):
        raise ValueError(f"Triton URLs {urls!r}: {sorted({u for u in seen if seen.count(u) > 1})} listed twice")
    return replicas


def split_url(url: str) -> tuple[str, bool]:
    """``http(s)://host:port[/base]`` or ``host:port`` -> (``host:port[/base]``, use TLS)."""
    url = url.strip()
    ssl = url.startswith("https://")
    address = re.sub(r"^https?://", "", url).rstrip("/")
    if not address or "://" in address or " " in address:
        raise ValueError(f"Triton URL {url!r}: expected host:port (e.g. {DEFAULT_URL}) or http(s)://host:port "
                         f"(argument or {ENV_URL})")
    return address, ssl


@dataclass(frozen=True)
class ModelInfo:
    """A served embedding model, read from its Triton config (``parameters`` written by ``exporter build``).

    ``prompts`` / ``default_prompt_name`` are the model's sentence-transformers prompts (the server prepends the
    default one when a call names none); ``truncate_dim`` is the dimension the client truncates to when a call gives
    no ``dimensions``; ``normalized`` says whether the model ends with a Normalize module (then truncated vectors
    are re-normalized). ``prompt_inputs`` / ``token_counts`` say whether the server has the PROMPT_NAME/PROMPT
    inputs and the TOKEN_COUNT output (repositories built before they existed have neither).
    """

    name: str
    dim: int
    max_batch_size: int
    precision: str | None = None
    route: str | None = None
    source: str | None = None  # the Hugging Face id or directory it was exported from
    max_seq_length: int | None = None  # tokens per text; longer texts are truncated by the server
    normalized: bool = True
    prompts: dict[str, str] = field(default_factory=dict)
    default_prompt_name: str | None = None
    truncate_dim: int | None = None
    prompt_inputs: bool = False
    token_counts: bool = False

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> ModelInfo | None:
        """The model's info if ``config`` (Triton's JSON model config) is an embedding ensemble, else None."""
        if config.get("platform") != "ensemble" or int(config.get("max_batch_size") or 0) < 1:
            return None
        inputs = {t.get("name"): t for t in config.get("input", [])}
        outputs = {t.get("name"): t for t in config.get("output", [])}
        text, embedding = inputs.get(TEXT_INPUT), outputs.get(EMBEDDING_OUTPUT)
        if not text or not embedding or text.get("data_type") != "TYPE_STRING" \
                or embedding.get("data_type") != "TYPE_FP32":
            return None
        params = {k: v.get("string_value") for k, v in (config.get("parameters") or {}).items()}
        dims = [int(d) for d in embedding.get("dims", [])]
        dim = int(params["dim"]) if params.get("dim") else (dims[-1] if dims and dims[-1] > 0 else 0)
        if dim < 1:
            return None
        return cls(config["name"], dim, int(config["max_batch_size"]), params.get("precision"),
                   params.get("route"), params.get("model"), _int_or_none(params.get("max_seq_length")),
                   normalized=params.get("normalized", "true").lower() == "true",
                   prompts=_prompts(params.get("prompts")),
                   default_prompt_name=params.get("default_prompt_name") or None,
                   truncate_dim=_int_or_none(params.get("truncate_dim")),
                   prompt_inputs={PROMPT_NAME_INPUT, PROMPT_INPUT} <= set(inputs),
                   token_counts=TOKEN_COUNT_OUTPUT in outputs)


def _int_or_none(value: str | None) -> int | None:
    return int(value) if value else None


def _prompts(value: str | None) -> dict[str, str]:
    """The ``prompts`` parameter (a JSON object name -> prefix); anything else reads as no prompts."""
    try:
        prompts = json.loads(value) if value else {}
    except json.JSONDecodeError:
        return {}
    return {str(k): str(v) for k, v in prompts.items()} if isinstance(prompts, dict) else {}


@dataclass(frozen=True)
class Embeddings:
    """What :meth:`client.EmbeddingClient.embed_with_usage` returns: the vectors and the true token counts.

    ``vectors`` is ``(n, dim)`` float32 (``(dim,)`` for a single str); ``token_counts`` holds, per text, the tokens
    the encoder really saw (after the prompt and truncation at ``max_seq_length``, special tokens included), int64,
    ``(n,)`` (a 0-d array for a single str). Counts come from the server's tokenizer, so billing and usage reports
    are exact rather than estimated.
    """

    vectors: np.ndarray
    token_counts: np.ndarray
    # the model version(s) that answered, from the responses (one unless a rolling update happened mid-call)
    model_versions: tuple[str, ...] = ()

    @property
    def total_tokens(self) -> int:
        """The tokens of all texts together (OpenAI's ``usage.total_tokens``)."""
        return int(np.sum(self.token_counts))


@dataclass(frozen=True)
class CallOptions:
    """One ``embed`` call's options, checked against the model before any request is sent."""

    prompt_name: str | None = None
    prompt: str | None = None
    dimensions: int | None = None  # None: the full vector
    usage: bool = False  # ask for TOKEN_COUNT too


def call_options(info: ModelInfo, *, prompt_name: str | None, prompt: str | None, dimensions: int | None,
                 usage: bool) -> CallOptions:
    """Check a call's prompt/dimensions options against ``info``; the model's ``truncate_dim`` when no
    ``dimensions`` is given. Raises :class:`InvalidInput` naming the bad value and what is allowed."""
    if prompt_name is not None and prompt is not None:
        raise _invalid(f"give prompt_name or prompt, not both (prompt_name={prompt_name!r}, prompt={prompt!r:.60})")
    for label, value in (("prompt_name", prompt_name), ("prompt", prompt)):
        if value is not None and not isinstance(value, str):
            raise _invalid(f"{label}={value!r:.60} is {type(value).__name__}, expected str", label)
    if (prompt_name is not None or prompt is not None) and not info.prompt_inputs:
        raise _invalid(f"model {info.name!r} was built without the {PROMPT_NAME_INPUT}/{PROMPT_INPUT} inputs; "
                       "rebuild it with this version of 'exporter build' to use prompts")
    if prompt_name is not None and prompt_name not in info.prompts:
        raise _invalid(f"prompt_name={prompt_name!r} is not a prompt of model {info.name!r}; allowed: "
                       + (", ".join(repr(n) for n in info.prompts) if info.prompts else "none (it has no prompts)"),
                       "prompt_name")
    if usage and not info.token_counts:
        raise _invalid(f"model {info.name!r} was built without the {TOKEN_COUNT_OUTPUT} output; rebuild it with this "
                       "version of 'exporter build' to get token counts")
    if dimensions is None:
        dimensions = info.truncate_dim
    elif isinstance(dimensions, bool) or not isinstance(dimensions, (int, np.integer)) \
            or not 1 <= dimensions <= info.dim:
        raise _invalid(f"dimensions={dimensions!r} is out of range for model {info.name!r}; allowed: an integer "
                       f"from 1 to {info.dim}", "dimensions")
    full = dimensions is None or int(dimensions) == info.dim
    return CallOptions(prompt_name, prompt, None if full else int(dimensions), usage)


def _invalid(message: str, option: str | None = None) -> InvalidInput:
    return InvalidInput(message, index=None, reason=message, option=option)


def ready_names(index: Iterable[Mapping[str, Any]]) -> list[str]:
    """The names of the READY models in Triton's repository index, sorted, each once (one entry per version)."""
    return sorted({entry["name"] for entry in index if entry.get("state") == "READY"})


def embedding_models(configs: Iterable[dict[str, Any] | None]) -> list[ModelInfo]:
    """The embedding models among the configs of the ready models, in the given order.

    ``None`` stands for a model that the index listed as ready but that was unloaded before its config could be
    read (the index and the config calls are separate requests): it is skipped, so a model leaving the server
    while ``models()`` runs does not fail the listing of the others.
    """
    infos = (ModelInfo.from_config(config) for config in configs if config is not None)
    return [info for info in infos if info is not None]


def log_unloaded(name: str) -> None:
    """Log that ``name`` left the server between the repository index and its config request (then skipped)."""
    log.info("model %r was unloaded while the served models were listed; skipped", name)


def choose_model(requested: str | None, served: Sequence[ModelInfo]) -> ModelInfo:
    """The served model to use: the one named, or the only one when none is named."""
    names = sorted(m.name for m in served)
    if requested is None:
        if len(served) == 1:
            return served[0]
        why = "no embedding model is served" if not served else \
            f"{len(served)} embedding models are served: pass model=... (or --model, or set {ENV_MODEL})"
        raise ModelNotFound(f"no model chosen and {why}", model=None, available=names)
    for info in served:
        if info.name == requested:
            return info
    raise ModelNotFound(f"model {requested!r} is not served (or not ready)", model=requested, available=names)


def not_an_embedding_model(name: str, available: Sequence[str]) -> ModelNotFound:
    return ModelNotFound(f"model {name!r} is served but is not an embedding model ({TEXT_INPUT} -> "
                         f"{EMBEDDING_OUTPUT} ensemble)", model=name, available=available)


def encode_texts(texts: str | Iterable[str]) -> tuple[list[bytes], bool]:
    """Check the caller's input and encode it to UTF-8: (encoded texts, whether a single str was given).

    Any ordered iterable of str is accepted (list, tuple, numpy array, generator); unordered containers are not,
    since rows come back in input order. Checked here rather than left to the server so the message names the
    caller's own index and type.
    """
    if isinstance(texts, str):
        return encode_texts([texts])[0], True
    kind = type(texts).__name__
    if texts is None or isinstance(texts, (bytes, bytearray)) or not isinstance(texts, Iterable):
        raise InvalidInput(f"texts must be a str or a list of str, got {kind}", index=None,
                           reason=f"unsupported input {kind}")
    if isinstance(texts, (Set, Mapping)):
        raise InvalidInput(f"texts must be ordered (rows come back in input order), got {kind}: pass a list",
                           index=None, reason=f"unordered container {kind}")
    items = list(texts)
    encoded = []
    for index, text in enumerate(items):
        if not isinstance(text, str):
            reason = f"is {type(text).__name__} ({text!r:.60}), expected str"
            raise InvalidInput(f"texts[{index}] {reason}", index=index, reason=reason)
        try:
            encoded.append(text.encode("utf-8"))
        except UnicodeEncodeError as exc:
            reason = f"cannot be encoded as UTF-8 ({exc.reason} at character {exc.start})"
            raise InvalidInput(f"texts[{index}] {reason}", index=index, reason=reason) from None
    return encoded, False


def batch_size_for(settings: Settings, info: ModelInfo) -> int:
    """The request size: the caller's ``batch_size`` or the model's ``max_batch_size``, never above the latter."""
    if settings.batch_size is None:
        return info.max_batch_size
    if settings.batch_size > info.max_batch_size:
        raise ValueError(f"batch_size={settings.batch_size} exceeds model {info.name!r} "
                         f"max_batch_size={info.max_batch_size}")
    return settings.batch_size


def spans(count: int, size: int) -> list[range]:
    """Index ranges of at most ``size`` covering ``range(count)`` in order."""
    return [range(start, min(start + size, count)) for start in range(0, count, size)]


def request_tensors(texts: Sequence[bytes], options: CallOptions = CallOptions()
                    ) -> tuple[list[httpclient.InferInput], list[httpclient.InferRequestedOutput]]:
    """The inference request for one batch: TEXT as BYTES [n, 1] (plus PROMPT_NAME or PROMPT, one per text, when
    the call names a prompt), EMBEDDING (and TOKEN_COUNT for usage) asked for as binary data."""
    inputs = [_bytes_input(TEXT_INPUT, texts)]
    for name, value in ((PROMPT_NAME_INPUT, options.prompt_name), (PROMPT_INPUT, options.prompt)):
        if value is not None:
            inputs.append(_bytes_input(name, [value.encode("utf-8")] * len(texts)))
    names = [EMBEDDING_OUTPUT] + ([TOKEN_COUNT_OUTPUT] if options.usage else [])
    return inputs, [httpclient.InferRequestedOutput(name, binary_data=True) for name in names]


def _bytes_input(name: str, values: Sequence[bytes]) -> httpclient.InferInput:
    data = np.empty((len(values), 1), dtype=object)
    data[:, 0] = list(values)
    tensor = httpclient.InferInput(name, list(data.shape), "BYTES")
    tensor.set_data_from_numpy(data)
    return tensor


Part = tuple[np.ndarray, "np.ndarray | None", str]  # one batch's (vectors, token counts or None, model version)


def read_result(result: Any, info: ModelInfo, rows: int, options: CallOptions = CallOptions()) -> Part:
    """EMBEDDING (and TOKEN_COUNT when asked) from an inference result, checked against the contract."""
    array = result.as_numpy(EMBEDDING_OUTPUT)
    if array is None or array.shape != (rows, info.dim):
        shape = None if array is None else tuple(array.shape)
        raise ServerError(f"model {info.name!r} returned {EMBEDDING_OUTPUT} of shape {shape}; expected "
                          f"({rows}, {info.dim})")
    counts = None
    if options.usage:
        counts = result.as_numpy(TOKEN_COUNT_OUTPUT)
        if counts is None or counts.shape != (rows, 1):
            shape = None if counts is None else tuple(counts.shape)
            raise ServerError(f"model {info.name!r} returned {TOKEN_COUNT_OUTPUT} of shape {shape}; expected "
                              f"({rows}, 1)")
        counts = counts.reshape(rows).astype(np.int64, copy=False)
    version = str((result.get_response() or {}).get("model_version") or "")
    return array.astype(np.float32, copy=False), counts, version


def assemble(parts: Sequence[Part], info: ModelInfo, single: bool, options: CallOptions = CallOptions()
             ) -> Embeddings:
    """Batches back into input order, truncated to ``options.dimensions`` (re-normalized when the model
    normalizes, so cosine and dot product stay equal); the (dim,) vector for a single str."""
    matrix = np.concatenate([p[0] for p in parts]) if parts else np.empty((0, info.dim), dtype=np.float32)
    counts = np.concatenate([p[1] for p in parts if p[1] is not None] or [np.empty(0, dtype=np.int64)])
    if options.dimensions is not None:
        matrix = truncate(matrix, options.dimensions, info.normalized)
    versions = tuple(dict.fromkeys(p[2] for p in parts if p[2]))
    if single:
        return Embeddings(matrix[0], counts[0] if counts.size else counts, versions)
    return Embeddings(matrix, counts, versions)


def truncate(vectors: np.ndarray, dimensions: int, normalize: bool) -> np.ndarray:
    """The first ``dimensions`` columns (Matryoshka truncation), L2-normalized again when ``normalize``."""
    head = np.ascontiguousarray(vectors[:, :dimensions])
    if normalize:
        head /= np.linalg.norm(head, axis=1, keepdims=True).clip(min=1e-12)
    return head


def make_translator(replica: Replica, transport_errors: tuple[type[BaseException], ...], *,
                    model: str | None = None, offset: int = 0) -> Callable[[Exception], EmbeddingError | None]:
    """A function mapping one request's exception to the client's error (None: not ours, re-raise as is).

    ``offset`` is the position of the request's first text in the caller's input, so a server-side 400 that names
    ``TEXT[i]`` becomes ``InvalidInput(index=offset + i)``.
    """
    where = f"Triton at {replica.url}"

    def translate(exc: Exception) -> EmbeddingError | None:
        if isinstance(exc, EmbeddingError):
            return exc
        if isinstance(exc, InferenceServerException):
            return _from_server(exc, where, model, offset)
        if isinstance(exc, transport_errors):
            return ServerUnavailable(f"cannot reach {where}: {type(exc).__name__}: {exc}".rstrip(": "))
        return None

    return translate


def _from_server(exc: InferenceServerException, where: str, model: str | None, offset: int) -> EmbeddingError:
    status, message = exc.status(), exc.message() or str(exc)
    if status == "503" or "UNAVAILABLE" in message:
        return ServerUnavailable(f"{where} is unavailable (HTTP {status}): {message}", server_message=message)
    if status == "404" or _UNKNOWN_MODEL.search(message):
        return ModelNotFound(f"model {model!r} is not served", model=model, available=[], server_message=message)
    if status is not None and status.startswith("4"):
        found = _SERVER_TEXT_INDEX.search(message)
        index = offset + int(found.group(1)) if found else None
        subject = f"texts[{index}]" if index is not None else "request"
        return InvalidInput(f"{where} rejected {subject} (HTTP {status}): {message}", index=index, reason=message,
                            server_message=message)
    return ServerError(f"{where} failed (HTTP {status}): {message}", status=status, server_message=message)
