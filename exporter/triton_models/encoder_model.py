"""Triton python-backend model ``<name>_encoder``: token id tensors -> sentence vectors, via a runtime loader.

Copied verbatim into the generated repository as ``<name>_encoder/1/model.py`` next to the artefact's runtime
loader (``onnx_encoder.py`` / ``torch_encoder.py``, named by the ``runtime_loader``/``runtime_class`` parameters).
Serves torch routes everywhere and, on the local pip ``tritonserver`` (python backend only), ONNX routes too.

Why it batches itself: the python backend hands ``execute`` a list of requests. Running them one by one costs one
runtime call each; here the requests of a dynamic batch (inputs are ``allow_ragged_batch``) are right-padded to one
length, run in one call and split. Padding is masked by ``attention_mask``, so vectors do not change.
"""

import importlib.util
import json
import os

import numpy as np
import triton_python_backend_utils as pb_utils

OUTPUT = "sentence_embedding"


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
        self.encoder = encoder_cls(version_dir, device=device, threads=threads)
        self.inputs = [tensor["name"] for tensor in config["input"]]

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
        raises, the requests are run alone, so only the offending one gets the error.
        """
        try:
            vectors = self.encoder(pad_and_stack(feeds, self.inputs))
        except Exception as exc:  # noqa: BLE001 - any runtime failure is answered per request, never raised
            if len(feeds) == 1:
                return [pb_utils.TritonError(f"the encoder failed on this request: {exc}")]
            return [part for feed in feeds for part in self._encode([feed])]
        sizes = np.cumsum([f[self.inputs[0]].shape[0] for f in feeds])[:-1]
        return np.split(vectors, sizes)
