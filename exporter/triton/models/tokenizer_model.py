"""Triton python-backend model ``<name>_tokenizer``: TEXT (UTF-8 bytes) -> token id tensors and TOKEN_COUNT.

Copied verbatim into the generated repository as ``<name>_tokenizer/1/model.py``; it imports only numpy,
``tokenizers`` and Triton's ``triton_python_backend_utils``, so the NGC image needs nothing from this project.

Each request of a dynamic batch is answered on its own: a request with invalid UTF-8, the wrong shape or over the
configured limits gets an INVALID_ARG error (HTTP 400) naming the offending element, and its neighbours are still
tokenized. Texts are truncated to ``max_seq_length`` and padded to the longest text of their own request.

Prompts are applied here, so a raw Triton call gets what sentence-transformers gives: the optional inputs
``PROMPT_NAME`` (one of the ``prompts`` parameter's names) or ``PROMPT`` (an explicit prefix), one per text, are
prepended to the text (``prompt + text``, as sentence-transformers does); with neither, the ``default_prompt_name``
parameter's prompt is. ``TOKEN_COUNT`` is, per text, the tokens the encoder sees (prompt and special tokens
included, after truncation): what usage reporting needs.
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


def decode_texts(array, max_texts, max_bytes, name="TEXT"):
    """Validate one request's ``name`` tensor ([n, 1] of bytes) and decode it to a list of str."""
    if array.ndim != 2 or array.shape[1] != 1:
        raise RequestError(f"{name} must have shape [n, 1], got {list(array.shape)}")
    if array.shape[0] > max_texts:
        raise RequestError(f"{array.shape[0]} texts in one request; allowed: at most {max_texts}")
    texts = []
    for i, item in enumerate(array[:, 0]):
        if isinstance(item, str):
            item = item.encode("utf-8")
        if not isinstance(item, bytes):
            raise RequestError(f"{name}[{i}] is {type(item).__name__}, expected UTF-8 bytes")
        if len(item) > max_bytes:
            raise RequestError(f"{name}[{i}] is {len(item)} bytes; allowed: at most {max_bytes} bytes")
        try:
            texts.append(item.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise RequestError(f"{name}[{i}] is not valid UTF-8 (byte {exc.start}: {exc.reason})") from None
    return texts


class Prompts:
    """The model's sentence-transformers prompts and how one request picks them (``SentenceTransformer.encode``'s
    rules: an explicit prompt, else the named one, else the default one, else none)."""

    def __init__(self, prompts, default_name):
        self.prompts = prompts
        self.default = prompts.get(default_name, "") if default_name else ""

    def for_request(self, names, explicit, count):
        """One prefix per text from the decoded PROMPT_NAME / PROMPT values (None when not sent)."""
        if names is not None and explicit is not None:
            raise RequestError("give PROMPT_NAME or PROMPT, not both")
        for label, values in (("PROMPT_NAME", names), ("PROMPT", explicit)):
            if values is not None and len(values) != count:
                raise RequestError(f"{label} has {len(values)} rows; expected one per text ({count})")
        if explicit is not None:
            return explicit
        if names is None:
            return [self.default] * count
        return [self._lookup(i, name) for i, name in enumerate(names)]

    def _lookup(self, index, name):
        if name not in self.prompts:
            allowed = ", ".join(repr(n) for n in self.prompts) or "none (this model has no prompts)"
            raise RequestError(f"PROMPT_NAME[{index}]={name!r} is not a prompt of this model; allowed: {allowed}")
        return self.prompts[name]


class TritonPythonModel:
    """Hugging Face fast tokenizer behind Triton's python backend."""

    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {key: value["string_value"] for key, value in config.get("parameters", {}).items()}
        version_dir = os.path.join(args["model_repository"], args["model_version"])
        tokenizer_dir = os.path.join(version_dir, params.get("tokenizer_dir", "tokenizer"))
        self.tokenizer = Tokenizer.from_file(os.path.join(tokenizer_dir, "tokenizer.json"))
        self.tokenizer.enable_truncation(max_length=int(params["max_seq_length"]))
        pad_id, pad_token = _pad_token(tokenizer_dir, self.tokenizer)
        self.tokenizer.enable_padding(pad_id=pad_id, pad_token=pad_token)  # to the longest text of a call
        self.max_texts = int(params.get("max_texts_per_request", config.get("max_batch_size") or 64))
        self.max_bytes = int(params.get("max_text_bytes", 65536))
        self.outputs = [output["name"] for output in config["output"]]
        self.prompts = Prompts(json.loads(params.get("prompts") or "{}"), params.get("default_prompt_name"))

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                array = pb_utils.get_input_tensor_by_name(request, "TEXT").as_numpy()
                texts = decode_texts(array, self.max_texts, self.max_bytes)
                prefixes = self.prompts.for_request(self._optional(request, "PROMPT_NAME"),
                                                    self._optional(request, "PROMPT"), len(texts))
                responses.append(self._tokenize([prefix + text for prefix, text in zip(prefixes, texts)]))
            except RequestError as exc:
                error = pb_utils.TritonError(str(exc), pb_utils.TritonError.INVALID_ARG)
                responses.append(pb_utils.InferenceResponse(error=error))
        return responses

    def _optional(self, request, name):
        """An optional BYTES input decoded to str per row, or None when the request does not carry it."""
        tensor = pb_utils.get_input_tensor_by_name(request, name)
        return None if tensor is None else decode_texts(tensor.as_numpy(), self.max_texts, self.max_bytes, name)

    def _tokenize(self, texts):
        encodings = self.tokenizer.encode_batch(texts, add_special_tokens=True)
        fields = {"input_ids": "ids", "attention_mask": "attention_mask", "token_type_ids": "type_ids"}
        tensors = []
        for name in self.outputs:
            if name == "TOKEN_COUNT":  # the unpadded length: what the encoder attends to
                rows = [[sum(e.attention_mask)] for e in encodings]
            else:
                rows = [getattr(e, fields[name]) for e in encodings]
            tensors.append(pb_utils.Tensor(name, np.array(rows, dtype=np.int64)))
        return pb_utils.InferenceResponse(output_tensors=tensors)
