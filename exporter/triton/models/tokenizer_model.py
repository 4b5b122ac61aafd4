"""Triton python-backend model ``<name>_tokenizer``: TEXT (UTF-8 bytes) -> token id tensors.

Copied verbatim into the generated repository as ``<name>_tokenizer/1/model.py``; it imports only numpy,
``tokenizers`` and Triton's ``triton_python_backend_utils``, so the NGC image needs nothing from this project.

Each request of a dynamic batch is answered on its own: a request with invalid UTF-8, the wrong shape or over the
configured limits gets an INVALID_ARG error (HTTP 400) naming the offending element, and its neighbours are still
tokenized. Texts are truncated to ``max_seq_length`` and padded to the longest text of their own request.
"""

import json
import os

import numpy as np
import triton_python_backend_utils as pb_utils
from tokenizers import Tokenizer


class RequestError(ValueError):
    """A problem with one request's input; answered as INVALID_ARG for that request only."""


def _pad_token(tokenizer_dir, tokenizer):
    """(pad id, pad token) from tokenizer_config.json / special_tokens_map.json, else id 0 (masked anyway)."""
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        path = os.path.join(tokenizer_dir, name)
        if not os.path.isfile(path):
            continue
        with open(path, encoding="utf-8") as handle:
            token = json.load(handle).get("pad_token")
        if isinstance(token, dict):
            token = token.get("content")
        if isinstance(token, str) and tokenizer.token_to_id(token) is not None:
            return tokenizer.token_to_id(token), token
    return 0, tokenizer.id_to_token(0) or "[PAD]"


def _sides(tokenizer_dir):
    """(padding side, truncation side) from tokenizer_config.json, as transformers reads them: decoders such as
    Qwen3-Embedding pad on the left so that their last-token pooling finds the appended EOS."""
    path = os.path.join(tokenizer_dir, "tokenizer_config.json")
    config = {}
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as handle:
            config = json.load(handle)
    sides = tuple(config.get(key) or "right" for key in ("padding_side", "truncation_side"))
    bad = [side for side in sides if side not in ("left", "right")]
    if bad:
        raise ValueError(f"{path}: padding/truncation side {bad[0]!r} is not 'left' or 'right'")
    return sides


def decode_texts(array, max_texts, max_bytes):
    """Validate one request's TEXT tensor ([n, 1] of bytes) and decode it to a list of str."""
    if array.ndim != 2 or array.shape[1] != 1:
        raise RequestError(f"TEXT must have shape [n, 1], got {list(array.shape)}")
    if array.shape[0] > max_texts:
        raise RequestError(f"{array.shape[0]} texts in one request; allowed: at most {max_texts}")
    texts = []
    for i, item in enumerate(array[:, 0]):
        if isinstance(item, str):
            item = item.encode("utf-8")
        if not isinstance(item, bytes):
            raise RequestError(f"TEXT[{i}] is {type(item).__name__}, expected UTF-8 bytes")
        if len(item) > max_bytes:
            raise RequestError(f"TEXT[{i}] is {len(item)} bytes; allowed: at most {max_bytes} bytes")
        try:
            texts.append(item.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise RequestError(f"TEXT[{i}] is not valid UTF-8 (byte {exc.start}: {exc.reason})") from None
    return texts


class TritonPythonModel:
    """Hugging Face fast tokenizer behind Triton's python backend."""

    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {key: value["string_value"] for key, value in config.get("parameters", {}).items()}
        version_dir = os.path.join(args["model_repository"], args["model_version"])
        tokenizer_dir = os.path.join(version_dir, params.get("tokenizer_dir", "tokenizer"))
        self.tokenizer = Tokenizer.from_file(os.path.join(tokenizer_dir, "tokenizer.json"))
        padding_side, truncation_side = _sides(tokenizer_dir)
        self.tokenizer.enable_truncation(max_length=int(params["max_seq_length"]), direction=truncation_side)
        pad_id, pad_token = _pad_token(tokenizer_dir, self.tokenizer)
        # to the longest text of a call, on the side the model was trained with
        self.tokenizer.enable_padding(pad_id=pad_id, pad_token=pad_token, direction=padding_side)
        self.max_texts = int(params.get("max_texts_per_request", config.get("max_batch_size") or 64))
        self.max_bytes = int(params.get("max_text_bytes", 65536))
        self.outputs = [output["name"] for output in config["output"]]

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                array = pb_utils.get_input_tensor_by_name(request, "TEXT").as_numpy()
                responses.append(self._tokenize(decode_texts(array, self.max_texts, self.max_bytes)))
            except RequestError as exc:
                error = pb_utils.TritonError(str(exc), pb_utils.TritonError.INVALID_ARG)
                responses.append(pb_utils.InferenceResponse(error=error))
        return responses

    def _tokenize(self, texts):
        encodings = self.tokenizer.encode_batch(texts, add_special_tokens=True)
        fields = {"input_ids": "ids", "attention_mask": "attention_mask", "token_type_ids": "type_ids"}
        tensors = [pb_utils.Tensor(name, np.array([getattr(e, fields[name]) for e in encodings], dtype=np.int64))
                   for name in self.outputs]
        return pb_utils.InferenceResponse(output_tensors=tensors)
