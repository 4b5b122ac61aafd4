"""Run a torch-route artefact (``model.safetensors`` + ``encoder.json``): the sentence encoder and its loader.

Self-contained on purpose: the Triton repository writer copies this file verbatim into a python-backend model
directory, so it imports only numpy, torch, transformers, safetensors and (for NF4 weights) bitsandbytes —
never ``exporter``. The exporter imports :class:`SentenceEncoder` and :func:`pool` from here too, so the graph
that is exported to ONNX and the module the torch routes serve are one piece of code.

Weight formats are recognised by their safetensors keys, so the loader does not branch on precision names:

- ``<module>.weight`` (+ ``.absmax``, ``.quant_map``, ``.quant_state.bitsandbytes__nf4`` ...): a bitsandbytes
  NF4 ``Linear4bit`` saved by bitsandbytes itself; rebuilt with ``Params4bit.from_prequantized``.
- ``<name>.int8`` + ``<name>.scale``: an int8 row-wise tensor (the word-embedding table of the int4 route).
  A plain ``nn.Embedding``'s table stays int8 in memory (:class:`Int8Embedding` scales the rows it looks up: for
  an 8B decoder the table is 1.2 GB at fp16, a quarter of its int4 weights); any other tensor is dequantized at
  load time.
- ``<module>.input_scale``: a per-input-channel vector the linear layer ``<module>``'s input is multiplied by
  (activation-aware scaling: its weights were quantized as ``W * s`` per input channel, so it gets ``x / s``).
- anything else: a plain tensor, cast to the compute dtype.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

import numpy as np
import torch
from torch import nn

log = logging.getLogger(__name__)

ENCODER_JSON = "encoder.json"
WEIGHTS_FILE = "model.safetensors"
NF4_MARKER = ".quant_state.bitsandbytes__nf4"
INT8_SUFFIX, SCALE_SUFFIX = ".int8", ".scale"
POOLING_MODES = ("cls", "max", "mean", "mean_sqrt_len", "weightedmean", "lasttoken")
INPUT_SCALE_SUFFIX = ".input_scale"
IDENTITY = "torch.nn.modules.linear.Identity"
# encoder-decoder families whose encoder alone makes the sentence vector, as sentence-transformers loads them
# (its Transformer module's encoder-only registry): model_type -> transformers class
ENCODER_ONLY = {"t5": "T5EncoderModel", "mt5": "MT5EncoderModel", "umt5": "UMT5EncoderModel"}
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def pool(tokens: torch.Tensor, mask: torch.Tensor, mode: str) -> torch.Tensor:
    """One sentence-transformers pooling mode over ``tokens`` [batch, seq, hidden] with ``mask`` [batch, seq],
    computed as sentence-transformers 5 does (``Pooling._forward_padded``), so either padding side gives its vectors.
    """
    m = mask.unsqueeze(-1).to(tokens.dtype)
    rows = torch.arange(tokens.shape[0], device=tokens.device)
    if mode == "cls":  # the first real token: position 0 when padded right, after the padding when padded left
        return tokens[rows, mask.to(torch.int32).argmax(dim=1)]
    if mode == "max":
        return torch.where(m > 0, tokens, torch.finfo(tokens.dtype).min).amax(dim=1)
    if mode in ("mean", "mean_sqrt_len"):
        summed = (tokens * m).sum(dim=1)
        count = m.sum(dim=1).clamp(min=1e-9)
        return summed / (count if mode == "mean" else count.sqrt())
    if mode == "weightedmean":  # token i (from 1, counted over the padded row) weighs i
        weights = m * torch.arange(1, tokens.shape[1] + 1, device=tokens.device, dtype=tokens.dtype)[:, None]
        return (tokens * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)
    if mode == "lasttoken":
        # the last non-padding position, whether the tokenizer pads left or right
        seq = mask.shape[1]
        flipped_max, flipped_idx = mask.to(torch.int32).flip(1).max(dim=1)
        last = torch.where(flipped_max == 0, seq - 1, seq - flipped_idx - 1)
        return tokens[rows, last]
    raise ValueError(f"pooling mode {mode!r} is not supported; allowed: {', '.join(POOLING_MODES)}")


class SentenceEncoder(nn.Module):
    """Transformer + pooling (+ Dense layers) (+ L2 normalize): token ids in, the final sentence vector out.

    Inputs are positional in ``input_names`` order so that ONNX export and the runtime share one signature.
    """

    def __init__(self, transformer: nn.Module, pooling: list[str], dense: list[nn.Module], normalize: bool,
                 input_names: list[str]):
        super().__init__()
        self.transformer = transformer
        self.pooling = list(pooling)
        self.dense = nn.ModuleList(dense)
        self.normalize = normalize
        self.input_names = list(input_names)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        feeds = dict(zip(self.input_names, inputs))
        tokens = self.transformer(**feeds, return_dict=True).last_hidden_state
        vector = torch.cat([pool(tokens, feeds["attention_mask"], mode) for mode in self.pooling], dim=-1)
        for layer in self.dense:
            vector = layer(vector)
        if self.normalize:
            vector = nn.functional.normalize(vector.float(), p=2.0, dim=-1)
        return vector.float()


def activation(name: str | None) -> nn.Module:
    """The ``torch.nn`` activation a Dense config names by its import path (``torch.nn.modules.activation.GELU``
    or ``torch.nn.GELU``), built without arguments as sentence-transformers does.

    Why not ``import_from_string``: a model's config must not make the server import arbitrary code, so the name
    is only looked up among the module classes ``torch.nn`` itself exports."""
    name = name or IDENTITY
    cls = getattr(nn, name.rsplit(".", 1)[-1], None)
    known = isinstance(cls, type) and issubclass(cls, nn.Module) and name in (
        f"{cls.__module__}.{cls.__qualname__}", f"torch.nn.{cls.__qualname__}")
    if not known:
        raise ValueError(f"Dense activation {name!r} is not a torch.nn module class; allowed: any activation "
                         "torch.nn exports, by its path, e.g. torch.nn.modules.activation.GELU (custom code is "
                         "never imported)")
    try:
        return cls()
    except TypeError as exc:
        raise ValueError(f"Dense activation {name!r} cannot be built without arguments: {exc}") from None


def dense_layer(spec: dict[str, Any]) -> nn.Module:
    """A sentence-transformers ``Dense`` module (Linear + activation) from its config.json fields."""
    linear = nn.Linear(spec["in_features"], spec["out_features"], bias=spec.get("bias", True))
    return nn.Sequential(linear, activation(spec.get("activation_function")))


def model_class(model_type: str) -> Any:
    """The transformers class that loads ``model_type`` for embedding: the encoder alone for encoder-decoder
    families, else ``AutoModel``."""
    import transformers

    return getattr(transformers, ENCODER_ONLY.get(model_type, "AutoModel"))


def build_module(meta: dict[str, Any], *, attn_implementation: str | None = None,
                 artefact_dir: str | None = None) -> SentenceEncoder:
    """The encoder's architecture from ``encoder.json``, its transformer's parameters empty (on the meta device;
    the caller loads them with :func:`apply_weights`). Its buffers are real: non-persistent ones (rotary
    frequencies, position ids, embedding scales) are computed at construction and are not in the artefact. No
    random weights are drawn: for an 8B model that would cost ~30 GB of host memory and tens of seconds.

    A model with remote code (``code_dir`` in the metadata) is built from the copy of its code in the artefact,
    so the server needs neither the original directory nor the hub; its attention implementation is its own.
    """
    from transformers import AutoConfig, AutoModel
    from transformers.integrations.accelerate import init_empty_weights

    code_dir = meta.get("code_dir")
    if code_dir:
        if artefact_dir is None:
            raise ValueError(f"{ENCODER_JSON} names code_dir={code_dir!r}: the artefact directory is needed")
        config = AutoConfig.from_pretrained(os.path.join(artefact_dir, code_dir), trust_remote_code=True)
        with init_empty_weights():
            transformer = AutoModel.from_config(config, trust_remote_code=True)
    else:
        config_dict = dict(meta["config"])
        config = AutoConfig.for_model(config_dict.pop("model_type"), **config_dict)
        kwargs = {"attn_implementation": attn_implementation} if attn_implementation else {}
        with init_empty_weights():
            transformer = model_class(config.model_type)(config, **kwargs) if config.model_type in ENCODER_ONLY \
                else AutoModel.from_config(config, **kwargs)
    dense = [dense_layer(d) for d in meta.get("dense", [])]
    return SentenceEncoder(transformer, meta["pooling"], dense, bool(meta["normalize"]), meta["inputs"])


def _set_nf4_linears(module: SentenceEncoder, tensors: dict[str, torch.Tensor], compute: torch.dtype,
                     device: str) -> set[str]:
    """Swap each saved NF4 linear into a bitsandbytes ``Linear4bit``; returns the keys it consumed.
    bitsandbytes is imported only when there are NF4 tensors (bf16 artefacts do not need it)."""
    used: set[str] = set()
    markers = [k for k in tensors if k.endswith(NF4_MARKER)]
    if not markers:
        return used
    import bitsandbytes as bnb

    for key in markers:
        prefix = key[: -len(NF4_MARKER)]  # "<module>.weight"
        owner = prefix.rsplit(".", 1)[0]
        stats = {k[len(prefix) + 1:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}
        used |= {prefix} | {prefix + "." + k for k in stats}  # before from_prequantized rewrites stats
        old: nn.Linear = module.get_submodule(owner)
        new = bnb.nn.Linear4bit(old.in_features, old.out_features, bias=old.bias is not None,
                                compute_dtype=compute, quant_type="nf4", device="meta")
        new.weight = bnb.nn.Params4bit.from_prequantized(tensors[prefix], stats, requires_grad=False,
                                                         device=device, module=new)
        if old.bias is not None:
            new.bias = nn.Parameter(tensors[owner + ".bias"].to(device, compute), requires_grad=False)
            used.add(owner + ".bias")
        module.set_submodule(owner, new)
    return used


def _scale_input(module: nn.Module, args: tuple) -> tuple:
    return ((args[0].float() * module.input_scale).to(args[0].dtype),) + args[1:]


def _set_input_scales(module: SentenceEncoder, tensors: dict[str, torch.Tensor]) -> set[str]:
    """Hook each ``<module>.input_scale`` in front of its layer (a buffer, so it follows ``.to(device)``). The scale
    is applied in float32, exactly as stored (fp16 values): a bf16 copy would round it away from the scale the
    weights were quantized with."""
    used = set()
    for key in (k for k in tensors if k.endswith(INPUT_SCALE_SUFFIX)):
        layer = module.get_submodule(key[: -len(INPUT_SCALE_SUFFIX)])
        layer.register_buffer("input_scale", tensors[key].float(), persistent=False)
        layer.register_forward_pre_hook(_scale_input)
        used.add(key)
    return used


class Int8Embedding(nn.Module):
    """An ``nn.Embedding`` whose table is int8 per row: rows are dequantized as they are looked up, so the table
    costs one byte per weight in device memory instead of two (fp16) or four (fp32)."""

    def __init__(self, table: torch.Tensor, scale: torch.Tensor, compute: torch.dtype):
        super().__init__()
        # not in the state dict: the loader fills them from the artefact's own keys, not by name
        self.register_buffer("int8", table, persistent=False)
        self.register_buffer("scale", scale.to(compute).unsqueeze(-1), persistent=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return nn.functional.embedding(ids, self.int8).to(self.scale.dtype) * nn.functional.embedding(ids, self.scale)


def _set_int8_embeddings(module: SentenceEncoder, tensors: dict[str, torch.Tensor], compute: torch.dtype) -> set[str]:
    """Swap each plain ``nn.Embedding`` saved as int8 rows into an :class:`Int8Embedding`; subclasses (e.g. Gemma's
    scaled embedding) keep their own forward and get the dequantized table instead (:func:`_plain_state`)."""
    used = set()
    modules = dict(module.named_modules())
    for key in (k for k in tensors if k.endswith(INT8_SUFFIX)):
        base = key[: -len(INT8_SUFFIX)]  # "<module>.weight"
        owner = base.rsplit(".", 1)[0]
        if type(modules.get(owner)) is not nn.Embedding:
            continue
        module.set_submodule(owner, Int8Embedding(tensors[key], tensors[base + SCALE_SUFFIX], compute))
        used |= {base, key, base + SCALE_SUFFIX}
    return used


def _plain_state(tensors: dict[str, torch.Tensor], skip: set[str]) -> dict[str, torch.Tensor]:
    """Plain tensors; an int8 row-wise table that :func:`_set_int8_embeddings` did not take is dequantized whole
    (``w = int8 * scale``)."""
    state = {}
    for key, value in tensors.items():
        if key in skip or key.endswith(SCALE_SUFFIX):
            continue
        if key.endswith(INT8_SUFFIX):
            base = key[: -len(INT8_SUFFIX)]
            state[base] = value.float() * tensors[base + SCALE_SUFFIX].float().unsqueeze(-1)
        else:
            state[key] = value
    return state


def apply_weights(module: SentenceEncoder, tensors: dict[str, torch.Tensor], compute: torch.dtype,
                  device: str) -> None:
    """Load an artefact's ``tensors`` into ``module`` on ``device``, each in its storage format (module
    docstring); raises ``ValueError`` naming the keys that do not match the architecture."""
    used = (_set_nf4_linears(module, tensors, compute, device) | _set_input_scales(module, tensors)
            | _set_int8_embeddings(module, tensors, compute))
    # assign=True: the artefact's tensors become the parameters, so the empty (meta) ones of build_module are
    # replaced instead of copied into; float tensors arrive in the compute dtype, so every parameter ends up in it
    # (the NF4 linears and int8 tables were made in it above)
    state = {k: v.to(compute) if v.is_floating_point() else v for k, v in _plain_state(tensors, used).items()}
    missing, unexpected = module.load_state_dict(state, strict=False, assign=True)
    problems = [k for k in missing if k not in used] + unexpected
    if problems:
        raise ValueError(f"weights do not match the architecture: {problems[:5]}")
    empty = [name for name, p in module.named_parameters() if p.is_meta]
    if empty:
        raise ValueError(f"weights do not match the architecture: no weights for {empty[:5]}")
    module.to(device)


def load_encoder(artefact_dir: str, device: str = "cpu") -> tuple[SentenceEncoder, dict[str, Any]]:
    """Rebuild the encoder of a torch-route artefact on ``device`` in the compute dtype its metadata asks for."""
    from safetensors.torch import load_file

    with open(os.path.join(artefact_dir, ENCODER_JSON), encoding="utf-8") as fh:
        meta = json.load(fh)
    kind = "cuda" if device.startswith("cuda") else "cpu"
    compute = DTYPES[meta["compute_dtype"][kind]]
    module = build_module(meta, attn_implementation="sdpa" if kind == "cuda" else None, artefact_dir=artefact_dir)
    tensors = load_file(os.path.join(artefact_dir, meta.get("weights", WEIGHTS_FILE)))
    try:
        apply_weights(module, tensors, compute, device)
    except ValueError as exc:
        raise ValueError(f"{artefact_dir}: {exc} (architecture from {ENCODER_JSON})") from None
    module.eval()
    return module, meta


class TorchEncoder:
    """Callable encoder over a torch-route artefact: ``feeds`` (numpy int64 [batch, seq]) -> float32 [batch, dim].

    The compute dtype per device kind comes from ``encoder.json`` ("compute_dtype": fp32 on CPU; fp16 or bf16
    on GPU, as the route chose). ``memory_optimization`` (the plan's GPU memory setting) gives torch's CUDA
    caching allocator expandable segments, which map memory in small steps and reuse it across batch shapes
    instead of caching a block per size; it applies only if CUDA was not used in this process yet (true in a
    Triton python-backend stub).
    """

    def __init__(self, artefact_dir: str, device: str = "cpu", threads: int | None = None,
                 memory_optimization: bool = False):
        if threads:
            torch.set_num_threads(threads)
        if memory_optimization and device.startswith("cuda"):
            os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
        self.device = device
        self.module, self.meta = load_encoder(artefact_dir, device)
        self.input_names: list[str] = list(self.meta["inputs"])

    @torch.inference_mode()
    def __call__(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        args = [torch.as_tensor(np.asarray(feeds[name], dtype=np.int64), device=self.device)
                for name in self.input_names]
        return self.module(*args).float().cpu().numpy()
