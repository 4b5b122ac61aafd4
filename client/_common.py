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

    def next_delay(self, error: EmbeddingError, attempt: int) -> float | None:
        """Seconds to sleep before retrying after ``error`` on 0-based ``attempt``; None means give up."""
        if not isinstance(error, ServerUnavailable) or attempt + 1 >= self.attempts:
            return None
        base = min(self.max_backoff, self.backoff * 2 ** attempt)
        return base * (1.0 + random.uniform(0.0, self.jitter))

    def attempts_for(self, what: str, translate: Callable[[Exception], EmbeddingError | None]) -> Iterator[Attempt]:
        """Yield one :class:`Attempt` per try. Use as::

            for attempt in retry.attempts_for("infer", translate):
                with attempt:
                    return do_request()
                time.sleep(attempt.delay)   # or: await asyncio.sleep(attempt.delay)

        The last attempt (or any non-retryable failure) raises the translated error from the context manager.
        """
        for number in range(self.attempts):
            yield Attempt(self, number, what, translate)


@dataclass
class Attempt:
    """One try of a request: a context manager that turns transport/server exceptions into the client's errors and
    swallows them only when the policy says to retry (then ``delay`` holds the backoff)."""

    retry: Retry
    number: int
    what: str
    translate: Callable[[Exception], EmbeddingError | None]
    delay: float = field(default=0.0, init=False)

    def __enter__(self) -> Attempt:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> bool:
        if not isinstance(exc, Exception):
            return False  # success, or KeyboardInterrupt/CancelledError: never swallowed
        error = self.translate(exc)
        if error is None:
            return False  # not a server/transport problem: a bug to surface as is
        delay = self.retry.next_delay(error, self.number)
        if delay is None:
            if error is exc:
                return False
            raise error from exc
        log.warning("%s failed (attempt %d of %d): %s; retrying in %.2fs",
                    self.what, self.number + 1, self.retry.attempts, error, delay)
        self.delay = delay
        return True


@dataclass(frozen=True)
class Settings:
    """Resolved client configuration (arguments, then environment, then defaults)."""

    url: str  # host:port[/base], no scheme, as tritonclient wants it
    ssl: bool
    model: str | None
    batch_size: int | None
    max_concurrency: int
    timeouts: Timeouts
    retry: Retry
    headers: tuple[tuple[str, str], ...] = ()  # sent with every request (e.g. Authorization for a proxy)

    @classmethod
    def create(cls, url: str | None, model: str | None, batch_size: int | None, max_concurrency: int,
               timeouts: Timeouts | None, retry: Retry | None,
               headers: Mapping[str, str] | None = None) -> Settings:
        raw_url = url or os.environ.get(ENV_URL) or DEFAULT_URL
        address, ssl = split_url(raw_url)
        for name, value in (("batch_size", batch_size), ("max_concurrency", max_concurrency)):
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise ValueError(f"{name}={value!r}: expected an int >= 1")
        pairs = tuple((headers or {}).items())
        for key, value in pairs:
            if not isinstance(key, str) or not isinstance(value, str) or not key or "\n" in key + value:
                raise ValueError(f"header {key!r}: {value!r}: expected non-empty str names and str values "
                                 "without line breaks")
        return cls(address, ssl, model or os.environ.get(ENV_MODEL) or None, batch_size, max_concurrency,
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


def split_url(url: str) -> tuple[str, bool]:
    """``http(s)://host:port[/base]`` or ``host:port`` -> (``host:port[/base]``, use TLS)."""
    ssl = url.startswith("https://")
    address = re.sub(r"^https?://", "", url.strip()).rstrip("/")
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
            raise _invalid(f"{label}={value!r:.60} is {type(value).__name__}, expected str")
    if (prompt_name is not None or prompt is not None) and not info.prompt_inputs:
        raise _invalid(f"model {info.name!r} was built without the {PROMPT_NAME_INPUT}/{PROMPT_INPUT} inputs; "
                       "rebuild it with this version of 'exporter build' to use prompts")
    if prompt_name is not None and prompt_name not in info.prompts:
        raise _invalid(f"prompt_name={prompt_name!r} is not a prompt of model {info.name!r}; allowed: "
                       + (", ".join(repr(n) for n in info.prompts) if info.prompts else "none (it has no prompts)"))
    if usage and not info.token_counts:
        raise _invalid(f"model {info.name!r} was built without the {TOKEN_COUNT_OUTPUT} output; rebuild it with this "
                       "version of 'exporter build' to get token counts")
    if dimensions is None:
        dimensions = info.truncate_dim
    elif isinstance(dimensions, bool) or not isinstance(dimensions, (int, np.integer)) \
            or not 1 <= dimensions <= info.dim:
        raise _invalid(f"dimensions={dimensions!r} is out of range for model {info.name!r}; allowed: an integer "
                       f"from 1 to {info.dim}")
    full = dimensions is None or int(dimensions) == info.dim
    return CallOptions(prompt_name, prompt, None if full else int(dimensions), usage)


def _invalid(message: str) -> InvalidInput:
    return InvalidInput(message, index=None, reason=message)


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


Part = tuple[np.ndarray, "np.ndarray | None"]  # one batch's (vectors, token counts or None)


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
    return array.astype(np.float32, copy=False), counts


def assemble(parts: Sequence[Part], info: ModelInfo, single: bool, options: CallOptions = CallOptions()
             ) -> Embeddings:
    """Batches back into input order, truncated to ``options.dimensions`` (re-normalized when the model
    normalizes, so cosine and dot product stay equal); the (dim,) vector for a single str."""
    matrix = np.concatenate([p[0] for p in parts]) if parts else np.empty((0, info.dim), dtype=np.float32)
    counts = np.concatenate([p[1] for p in parts if p[1] is not None] or [np.empty(0, dtype=np.int64)])
    if options.dimensions is not None:
        matrix = truncate(matrix, options.dimensions, info.normalized)
    if single:
        return Embeddings(matrix[0], counts[0] if counts.size else counts)
    return Embeddings(matrix, counts)


def truncate(vectors: np.ndarray, dimensions: int, normalize: bool) -> np.ndarray:
    """The first ``dimensions`` columns (Matryoshka truncation), L2-normalized again when ``normalize``."""
    head = np.ascontiguousarray(vectors[:, :dimensions])
    if normalize:
        head /= np.linalg.norm(head, axis=1, keepdims=True).clip(min=1e-12)
    return head


def make_translator(settings: Settings, transport_errors: tuple[type[BaseException], ...], *,
                    model: str | None = None, offset: int = 0) -> Callable[[Exception], EmbeddingError | None]:
    """A function mapping one request's exception to the client's error (None: not ours, re-raise as is).

    ``offset`` is the position of the request's first text in the caller's input, so a server-side 400 that names
    ``TEXT[i]`` becomes ``InvalidInput(index=offset + i)``.
    """
    where = f"Triton at {settings.url}"

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
