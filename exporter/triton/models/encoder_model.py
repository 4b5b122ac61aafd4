"""Triton python-backend model ``<name>_encoder``: token id tensors -> sentence vectors, via a runtime loader.

Copied verbatim into the generated repository as ``<name>_encoder/1/model.py`` next to the artefact's runtime
loader (``onnx_encoder.py`` / ``torch_encoder.py``, named by the ``runtime_loader``/``runtime_class`` parameters).
Serves torch routes everywhere and, on the local pip ``tritonserver`` (python backend only), ONNX routes too.

Why it batches itself: the python backend hands ``execute`` a list of requests. Running them one by one costs one
runtime call each; here the texts of a dynamic batch (inputs are ``allow_ragged_batch``) are pooled, sorted by
token length and run in length buckets of at most ``max_batch_tokens`` padded tokens each (a config parameter,
``exporter build --max-batch-tokens``; at least one text per bucket), so a short text is never padded to the longest
text of another request, and one long text (8192 tokens) is run with few others instead of making the whole batch
that long: the runtime's activations stay bounded by the budget. Padding is masked by ``attention_mask``, so
vectors do not change.
"""

import importlib.util
import json
import os
import sys

import numpy as np
import triton_python_backend_utils as pb_utils

OUTPUT = "sentence_embedding"
DEFAULT_MAX_BATCH_TOKENS = 4096  # configs written before the parameter existed keep the budget they were built with
# How each runtime says it ran out of device memory: torch raises torch.cuda.OutOfMemoryError ("CUDA out of
# memory"); ONNX Runtime raises its RuntimeException with "Failed to allocate memory" (its arena) or
# "CUDA failure 2: out of memory" (a CUDA call). Matched on text so this file needs neither library.
OOM_MARKERS = ("out of memory", "failed to allocate memory")
OOM_ADVICE = ("to fit, serve a smaller precision (int8 or int4), lower max_batch_size or the token budget per "
              "batch, or run fewer instances per GPU (instance_group count)")


def is_out_of_memory(exc):
    """Whether ``exc`` is a runtime's out-of-memory error (torch's OutOfMemoryError, MemoryError, ORT's text)."""
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return True
    return any(marker in str(exc).lower() for marker in OOM_MARKERS)


def free_device_cache():
    """Give torch's cached CUDA blocks back after an out-of-memory error, so the next call starts clean (a no-op
    without torch or before CUDA is initialised)."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def out_of_memory_message(exc, what):
    """``what`` (e.g. "loading m on cuda:0") ran out of memory: the runtime's own words, then the ways to fit."""
    return f"{what} ran out of memory ({type(exc).__name__}: {exc}); {OOM_ADVICE}"


def _load_class(path, name):
    spec = importlib.util.spec_from_file_location(os.path.splitext(os.path.basename(path))[0], path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, name)


def pad_and_stack(feeds, names):
    """Stack per-request [n_i, len_i] int64 arrays into [sum n_i, max len_i], zero-padded on the right."""
    if len(feeds) == 1:
        return {name: feeds[0][name] for name in names}
    rows = sum(f[names[0]].shape[0] for f in feeds)
    width = max(f[names[0]].shape[1] for f in feeds)
    batch = {name: np.zeros((rows, width), dtype=np.int64) for name in names}
    start = 0
    for feed in feeds:
        n, length = feed[names[0]].shape
        for name in names:
            batch[name][start:start + n, :length] = feed[name]
        start += n
    return batch


def length_buckets(lengths, max_tokens):
    """Row indices sorted by length and cut into buckets whose rows x longest length stays within ``max_tokens``
    (a bucket always takes at least one row). Sorting first is what keeps the padding small."""
    order = np.argsort(lengths, kind="stable")
    buckets, start = [], 0
    for end in range(1, len(order) + 1):
        if end - start > 1 and (end - start) * int(lengths[order[end - 1]]) > max_tokens:
            buckets.append(order[start:end - 1])
            start = end - 1
    buckets.append(order[start:])
    return buckets


class TritonPythonModel:
    """Runs an exported encoder (ONNX Runtime or torch) for a whole dynamic batch in one call."""

    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {key: value["string_value"] for key, value in config.get("parameters", {}).items()}
        version_dir = os.path.join(args["model_repository"], args["model_version"])
        encoder_cls = _load_class(os.path.join(version_dir, params["runtime_loader"]), params["runtime_class"])
        gpu = args.get("model_instance_kind") == "GPU"
        device = f"cuda:{args.get('model_instance_device_id', '0')}" if gpu else "cpu"
        threads = int(params.get("threads", "0")) or None
        # only ONNX encoders built with --tensorrt carry it; the torch runner takes no such argument
        extra = {"tensorrt_cache": params["tensorrt_cache"]} if gpu and params.get("tensorrt_cache") else {}
        try:
            self.encoder = encoder_cls(version_dir, device=device, threads=threads,
                                       memory_optimization=params.get("memory_optimization") == "true", **extra)
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            free_device_cache()
            what = f"loading {args.get('model_name', 'the encoder')} on {device}"
            raise RuntimeError(out_of_memory_message(exc, what)) from exc
        self.inputs = [tensor["name"] for tensor in config["input"]]
        self.max_batch_tokens = int(params.get("max_batch_tokens", DEFAULT_MAX_BATCH_TOKENS))

    def _feeds(self, request):
        feed = {name: pb_utils.get_input_tensor_by_name(request, name).as_numpy() for name in self.inputs}
        shapes = {name: array.shape for name, array in feed.items()}
        if len(set(shapes.values())) != 1 or len(next(iter(shapes.values()))) != 2:
            raise ValueError(f"token tensors must share one [batch, seq] shape, got {shapes}")
        return feed

    def execute(self, requests):
        responses = [None] * len(requests)
        good, feeds = [], []
        for i, request in enumerate(requests):
            try:
                feeds.append(self._feeds(request))
                good.append(i)
            except ValueError as exc:
                error = pb_utils.TritonError(str(exc), pb_utils.TritonError.INVALID_ARG)
                responses[i] = pb_utils.InferenceResponse(error=error)
        for i, part in zip(good, self._encode(feeds) if feeds else []):
            if isinstance(part, pb_utils.TritonError):
                responses[i] = pb_utils.InferenceResponse(error=part)
            else:
                responses[i] = pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(OUTPUT, part)])
        return responses

    def _encode(self, feeds):
        """One vector array per request, or a TritonError (HTTP 500) for each request the runtime fails on.

        Why the retry: one request whose tensors make the runtime raise (e.g. token ids outside the vocabulary,
        sent to this model directly) would otherwise fail every request batched with it. When the batched call
        raises, the requests are run alone, so only the offending one gets the error. An out-of-memory error
        frees the device cache first: a dynamic batch that did not fit often fits request by request.
        """
        try:
            vectors = self._run(pad_and_stack(feeds, self.inputs))
        except Exception as exc:  # noqa: BLE001 - any runtime failure is answered per request, never raised
            oom = is_out_of_memory(exc)
            if oom:
                free_device_cache()
            if len(feeds) == 1:
                message = (out_of_memory_message(exc, "the encoder, on this request,") if oom
                           else f"the encoder failed on this request: {exc}")
                return [pb_utils.TritonError(message)]
            return [part for feed in feeds for part in self._encode([feed])]
        sizes = np.cumsum([f[self.inputs[0]].shape[0] for f in feeds])[:-1]
        return np.split(vectors, sizes)

    def _run(self, batch):
        """The encoder over ``batch`` in length buckets, rows back in their original order."""
        first = batch[self.inputs[0]]
        if "attention_mask" in batch:  # up to the last unmasked position: safe for any padding side
            real = batch["attention_mask"] != 0
            lengths = np.where(real.any(axis=1), real.shape[1] - np.argmax(real[:, ::-1], axis=1), 0)
        else:
            lengths = np.full(first.shape[0], first.shape[1])
        buckets = length_buckets(lengths, self.max_batch_tokens)
        if len(buckets) == 1 and int(lengths.max(initial=0)) == first.shape[1]:
            return self.encoder(batch)
        out = None
        for rows in buckets:
            width = max(int(lengths[rows].max()), 1)
            part = self.encoder({name: batch[name][rows, :width] for name in self.inputs})
            if out is None:
                out = np.empty((first.shape[0],) + part.shape[1:], dtype=part.dtype)
            out[rows] = part
        return out
