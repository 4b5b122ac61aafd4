"""``EmbeddingClient``: the blocking client, on ``tritonclient.http``.

Thread safety: one ``EmbeddingClient`` may be shared by any number of threads. ``tritonclient.http`` clients are
gevent-based and must stay on the thread that made them, so every request runs on this client's own worker pool
(``max_concurrency`` threads), each thread with its own ``tritonclient.http.InferenceServerClient``. Concurrent
``embed`` calls from several threads therefore share, and are bounded by, that pool.
"""

from __future__ import annotations

import functools
import http.client
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

import numpy as np

from . import _common as common
from ._common import Embeddings, ModelInfo, Retry, Timeouts
from ._triton import httpclient
from .errors import ModelNotFound, ServerUnavailable

log = logging.getLogger(__name__)

T = TypeVar("T")
Transport = httpclient.InferenceServerClient
# What geventhttpclient raises for refused/reset/timed-out connections and for a server that drops a keep-alive
# connection (HTTPConnectionClosed is an http.client.HTTPException).
TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (OSError, http.client.HTTPException)


class EmbeddingClient:
    """Texts in, L2-normalized float32 vectors out, from an emb-provider model served by Triton.

    ``url`` defaults to ``$EMB_PROVIDER_TRITON_URL`` or ``localhost:8000``; several replicas of one deployment are
    given as a list (or a comma-separated string): requests are spread over the ones that are in, a request that
    fails on one (connection error, timeout, 503) moves to another at once, and a failing replica is taken out and
    probed back in (:class:`client._common.ReplicaSet`). ``model`` defaults to ``$EMB_PROVIDER_MODEL``, or the only
    embedding model served. ``batch_size`` defaults to the model's ``max_batch_size``. Use as a context
    manager (or call ``close()``) to release the worker threads and connections.
    """

    def __init__(self, url: str | Sequence[str] | None = None, *, model: str | None = None,
                 batch_size: int | None = None, max_concurrency: int = common.DEFAULT_MAX_CONCURRENCY,
                 timeouts: Timeouts | None = None, retry: Retry | None = None,
                 headers: Mapping[str, str] | None = None):
        self.settings = common.Settings.create(url, model, batch_size, max_concurrency, timeouts, retry, headers)
        self._pool = ThreadPoolExecutor(self.settings.max_concurrency, thread_name_prefix="emb-client")
        self._replicas = common.ReplicaSet(self.settings.replicas)
        self._local = threading.local()
        self._transports: list[Transport] = []
        self._lock = threading.Lock()
        self._infos: dict[str | None, ModelInfo] = {}  # by the name asked for (None: the default)
        self._closed = False

    def __enter__(self) -> EmbeddingClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Wait for running requests, then stop the workers and close their connections. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._pool.shutdown(wait=True, cancel_futures=True)
        for transport in self._transports:
            transport.close()

    # -- public API ---------------------------------------------------------------------------------------------

    def embed(self, texts: str | Iterable[str], *, model: str | None = None, prompt_name: str | None = None,
              prompt: str | None = None, dimensions: int | None = None) -> np.ndarray:
        """Embed ``texts``: a list gives ``(n, dim)`` float32 rows in input order (``(0, dim)`` for ``[]``), a single
        str gives ``(dim,)``.

        ``model`` overrides the client's model for this call. ``prompt_name`` (one of the model's ``prompts``) or an
        explicit ``prompt`` string is prepended to every text by the server, as sentence-transformers does; with
        neither, the model's default prompt applies (``prompt=""`` turns it off). ``dimensions=k`` keeps the first
        k dimensions, re-normalized when the model normalizes (Matryoshka truncation); the model's ``truncate_dim``
        applies when not given. Raises ``InvalidInput`` (with the text's index, or naming the bad option and what is
        allowed), ``ModelNotFound``, ``ServerUnavailable`` (after retries) or ``ServerError``."""
        return self._embed(texts, model, prompt_name, prompt, dimensions, usage=False).vectors

    def embed_with_usage(self, texts: str | Iterable[str], *, model: str | None = None,
                         prompt_name: str | None = None, prompt: str | None = None,
                         dimensions: int | None = None) -> Embeddings:
        """Like :meth:`embed`, plus the number of tokens the encoder saw per text (``Embeddings.token_counts``,
        ``Embeddings.total_tokens``), counted by the server's tokenizer after the prompt and truncation."""
        return self._embed(texts, model, prompt_name, prompt, dimensions, usage=True)

    def models(self) -> list[ModelInfo]:
        """The ready embedding models (TEXT -> EMBEDDING ensembles) with dim, precision and route, by name. A model
        unloaded while the list is read (after the repository index, before its config) is left out."""
        return self._submit(self._list_models).result()

    def model_info(self, *, model: str | None = None) -> ModelInfo:
        """The model ``embed`` uses (``model``, else the client's; looked up once, then cached); raises
        ``ModelNotFound`` listing the served ones."""
        name = model or self.settings.model
        with self._lock:
            info = self._infos.get(name)
        if info is None:
            info = self._submit(self._resolve, name).result()
            with self._lock:
                self._infos[name] = info
        return info

    def is_ready(self) -> bool:
        """One try per replica, True when one is ready. With a model named: the server is live and that model is ready
        (Triton's server readiness is false while any other model failed to load). Without: the whole server is
        ready."""
        return self._submit(self._ready_once).result()

    def wait_until_ready(self, timeout: float = 60.0, interval: float = 0.5) -> None:
        """Poll ``is_ready`` until it holds; ``ServerUnavailable`` after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while not self.is_ready():
            if time.monotonic() + interval > deadline:
                raise ServerUnavailable(f"Triton at {self.settings.url} not ready after {timeout:g}s"
                                        + (f" (model {self.settings.model!r})" if self.settings.model else ""))
            time.sleep(interval)

    # -- worker-side (runs on the pool's threads, each with its own transport) -----------------------------------

    def _submit(self, fn: Callable[..., T], *args: object) -> Future[T]:
        if self._closed:
            raise RuntimeError("EmbeddingClient is closed")
        return self._pool.submit(fn, *args)

    def _transport(self, replica: common.Replica) -> Transport:
        """This worker thread's connection to ``replica`` (made on first use)."""
        transports = self._local.__dict__.setdefault("transports", {})
        transport = transports.get(replica)
        if transport is None:
            s = self.settings
            transport = s.attach_headers(Transport(replica.url, ssl=replica.ssl, connection_timeout=s.timeouts.connect,
                                                   network_timeout=s.timeouts.request))
            transports[replica] = transport
            with self._lock:
                self._transports.append(transport)
        return transport

    def _call(self, what: str, request: Callable[[Transport], T], *, model: str | None = None,
              offset: int = 0) -> T:
        translate = functools.partial(common.make_translator, transport_errors=TRANSPORT_ERRORS, model=model,
                                      offset=offset)
        for attempt in self.settings.retry.attempts_for(what, translate, self._replicas):
            with attempt:
                return request(self._transport(attempt.replica))
            time.sleep(attempt.delay)
        raise AssertionError("Retry.attempts_for raises on its last attempt")

    def _embed(self, texts: str | Iterable[str], model: str | None, prompt_name: str | None, prompt: str | None,
               dimensions: int | None, *, usage: bool) -> Embeddings:
        encoded, single = common.encode_texts(texts)
        info = self.model_info(model=model)
        options = common.call_options(info, prompt_name=prompt_name, prompt=prompt, dimensions=dimensions,
                                      usage=usage)
        futures = [self._submit(self._infer, info, encoded, span, options)
                   for span in common.spans(len(encoded), common.batch_size_for(self.settings, info))]
        try:
            parts = [future.result() for future in futures]
        except ModelNotFound:
            self._forget(model, info)
            self.model_info(model=model)  # raises ModelNotFound listing the served models when it is really gone
            raise
        finally:
            for future in futures:
                future.cancel()  # after the first failure: do not start the remaining batches
        return common.assemble(parts, info, single, options)

    def _infer(self, info: ModelInfo, encoded: list[bytes], span: range, options: common.CallOptions
               ) -> common.Part:
        inputs, outputs = common.request_tensors(encoded[span.start:span.stop], options)
        result = self._call(f"infer {info.name}[{span.start}:{span.stop}]",
                            lambda t: t.infer(info.name, inputs, outputs=outputs), model=info.name,
                            offset=span.start)
        return common.read_result(result, info, len(span), options)

    def _list_models(self) -> list[ModelInfo]:
        index = self._call("repository index", lambda t: t.get_model_repository_index())
        return common.embedding_models([self._config_if_served(name) for name in common.ready_names(index)])

    def _config_if_served(self, name: str) -> dict | None:
        """``name``'s config, or None when the model was unloaded after the index listed it (Triton: unknown)."""
        try:
            return self._call(f"config {name}", lambda t: t.get_model_config(name), model=name)
        except ModelNotFound:
            common.log_unloaded(name)
            return None

    def _resolve(self, name: str | None) -> ModelInfo:
        if name is None:
            return common.choose_model(None, self._list_models())
        try:
            config = self._call(f"config {name}", lambda t: t.get_model_config(name), model=name)
        except ModelNotFound:
            return common.choose_model(name, self._list_models())  # raises, listing the served models
        info = ModelInfo.from_config(config)
        if info is None:
            raise common.not_an_embedding_model(name, [m.name for m in self._list_models()])
        return info

    def _ready_once(self) -> bool:
        """True when one replica is ready (so a request can be served)."""
        model = self.settings.model
        for replica in self.settings.replicas:
            transport = self._transport(replica)
            try:
                if transport.is_server_ready() if model is None else (
                        transport.is_server_live() and transport.is_model_ready(model)):
                    return True
            except TRANSPORT_ERRORS:
                continue
        return False

    def _forget(self, model: str | None, info: ModelInfo) -> None:
        with self._lock:
            if self._infos.get(model or self.settings.model) == info:
                del self._infos[model or self.settings.model]
