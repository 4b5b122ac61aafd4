"""``AsyncEmbeddingClient``: the asyncio twin of ``EmbeddingClient``, on ``tritonclient.http.aio`` (aiohttp).

Same methods as coroutines, same checks, batching, errors and retry policy (all from ``_common``). One instance
belongs to one event loop (aiohttp's session does); any number of tasks on that loop may call ``embed`` at once,
and their requests share the ``max_concurrency`` bound.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import TypeVar

import numpy as np

from . import _common as common
from ._common import Embeddings, ModelInfo, Retry, Timeouts
from ._triton import aioclient, aiohttp
from .errors import ModelNotFound, ServerUnavailable

log = logging.getLogger(__name__)

T = TypeVar("T")
Transport = aioclient.InferenceServerClient
TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (OSError, aiohttp.ClientConnectionError, asyncio.TimeoutError)


class AsyncEmbeddingClient:
    """Asyncio client with the arguments and methods of :class:`client.EmbeddingClient` (methods are coroutines).

    Use ``async with AsyncEmbeddingClient(...) as c:`` (or ``await c.close()``) to release the connections.
    """

    def __init__(self, url: str | Sequence[str] | None = None, *, model: str | None = None,
                 batch_size: int | None = None, max_concurrency: int = common.DEFAULT_MAX_CONCURRENCY,
                 timeouts: Timeouts | None = None, retry: Retry | None = None,
                 headers: Mapping[str, str] | None = None):
        self.settings = common.Settings.create(url, model, batch_size, max_concurrency, timeouts, retry, headers)
        self._limit = asyncio.Semaphore(self.settings.max_concurrency)
        self._replicas = common.ReplicaSet(self.settings.replicas)
        self._clients: dict[common.Replica, Transport] = {}  # made on first use, inside the loop that runs them
        self._infos: dict[str | None, ModelInfo] = {}  # by the name asked for (None: the default)
        self._closed = False

    async def __aenter__(self) -> AsyncEmbeddingClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the connections. Idempotent."""
        self._closed = True
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.close()

    # -- public API ---------------------------------------------------------------------------------------------

    async def embed(self, texts: str | Iterable[str], *, model: str | None = None, prompt_name: str | None = None,
                    prompt: str | None = None, dimensions: int | None = None) -> np.ndarray:
        """See :meth:`client.EmbeddingClient.embed`."""
        return (await self._embed(texts, model, prompt_name, prompt, dimensions, usage=False)).vectors

    async def embed_with_usage(self, texts: str | Iterable[str], *, model: str | None = None,
                               prompt_name: str | None = None, prompt: str | None = None,
                               dimensions: int | None = None) -> Embeddings:
        """See :meth:`client.EmbeddingClient.embed_with_usage`."""
        return await self._embed(texts, model, prompt_name, prompt, dimensions, usage=True)

    async def models(self) -> list[ModelInfo]:
        """See :meth:`client.EmbeddingClient.models`."""
        index = await self._call("repository index", lambda t: t.get_model_repository_index())
        configs = await asyncio.gather(*map(self._config_if_served, common.ready_names(index)))
        return common.embedding_models(configs)

    async def model_info(self, *, model: str | None = None) -> ModelInfo:
        """See :meth:`client.EmbeddingClient.model_info`."""
        name = model or self.settings.model
        if name not in self._infos:
            self._infos[name] = await self._resolve(name)
        return self._infos[name]

    async def is_ready(self) -> bool:
        """See :meth:`client.EmbeddingClient.is_ready`."""
        for replica in self.settings.replicas:
            client, model = self._transport(replica), self.settings.model
            try:
                if await client.is_server_ready() if model is None else (
                        await client.is_server_live() and await client.is_model_ready(model)):
                    return True
            except TRANSPORT_ERRORS:
                continue
        return False

    async def wait_until_ready(self, timeout: float = 60.0, interval: float = 0.5) -> None:
        """See :meth:`client.EmbeddingClient.wait_until_ready`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not await self.is_ready():
            if loop.time() + interval > deadline:
                raise ServerUnavailable(f"Triton at {self.settings.url} not ready after {timeout:g}s"
                                        + (f" (model {self.settings.model!r})" if self.settings.model else ""))
            await asyncio.sleep(interval)

    # -- internals ----------------------------------------------------------------------------------------------

    def _transport(self, replica: common.Replica) -> Transport:
        if self._closed:
            raise RuntimeError("AsyncEmbeddingClient is closed")
        if replica not in self._clients:
            s = self.settings
            # aiohttp's total timeout bounds connect + request; tritonclient.aio exposes no separate connect limit.
            self._clients[replica] = s.attach_headers(Transport(replica.url, ssl=replica.ssl,
                                                                conn_limit=s.max_concurrency,
                                                                conn_timeout=s.timeouts.request))
        return self._clients[replica]

    async def _call(self, what: str, request: Callable[[Transport], Awaitable[T]], *, model: str | None = None,
                    offset: int = 0) -> T:
        translate = functools.partial(common.make_translator, transport_errors=TRANSPORT_ERRORS, model=model,
                                      offset=offset)
        for attempt in self.settings.retry.attempts_for(what, translate, self._replicas):
            with attempt:
                async with self._limit:
                    return await request(self._transport(attempt.replica))
            await asyncio.sleep(attempt.delay)
        raise AssertionError("Retry.attempts_for raises on its last attempt")

    async def _embed(self, texts: str | Iterable[str], model: str | None, prompt_name: str | None,
                     prompt: str | None, dimensions: int | None, *, usage: bool) -> Embeddings:
        encoded, single = common.encode_texts(texts)
        info = await self.model_info(model=model)
        options = common.call_options(info, prompt_name=prompt_name, prompt=prompt, dimensions=dimensions,
                                      usage=usage)
        tasks = [asyncio.ensure_future(self._infer(info, encoded, span, options))
                 for span in common.spans(len(encoded), common.batch_size_for(self.settings, info))]
        try:
            parts = await asyncio.gather(*tasks)
        except ModelNotFound:
            self._infos.pop(model or self.settings.model, None)
            await self.model_info(model=model)  # raises ModelNotFound listing the served models when really gone
            raise
        finally:
            for task in tasks:
                task.cancel()  # after the first failure: stop the remaining batches
        return common.assemble(parts, info, single, options)

    async def _infer(self, info: ModelInfo, encoded: list[bytes], span: range, options: common.CallOptions
                     ) -> common.Part:
        inputs, outputs = common.request_tensors(encoded[span.start:span.stop], options)
        result = await self._call(f"infer {info.name}[{span.start}:{span.stop}]",
                                  lambda t: t.infer(info.name, inputs, outputs=outputs), model=info.name,
                                  offset=span.start)
        return common.read_result(result, info, len(span), options)

    async def _config_if_served(self, name: str) -> dict | None:
        """See :meth:`client.EmbeddingClient._config_if_served`."""
        try:
            return await self._call(f"config {name}", lambda t: t.get_model_config(name), model=name)
        except ModelNotFound:
            common.log_unloaded(name)
            return None

    async def _resolve(self, name: str | None) -> ModelInfo:
        if name is None:
            return common.choose_model(None, await self.models())
        try:
            config = await self._call(f"config {name}", lambda t: t.get_model_config(name), model=name)
        except ModelNotFound:
            return common.choose_model(name, await self.models())  # raises, listing the served models
        info = ModelInfo.from_config(config)
        if info is None:
            raise common.not_an_embedding_model(name, [m.name for m in await self.models()])
        return info
