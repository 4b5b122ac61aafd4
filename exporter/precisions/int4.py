"""int4 (torch): bitsandbytes NF4 ``Linear4bit`` for every transformer linear layer, with activation-aware scales.

bitsandbytes leaves embeddings alone, and in small models the word-embedding table is about half the weights,
so the table (every ``nn.Embedding``) is stored int8 row-wise (one fp16 scale per row; a plain table stays int8 in
memory at run time); NF4 statistics are double-quantized (``compress_statistics``). Everything else is stored
fp16. Compute (``encoder.json`` "compute_dtype"): fp32 on CPU; on GPU fp16, or bf16 for a model stored in bf16
when the target has it (:func:`cuda_compute_dtype`). bitsandbytes 0.50 runs NF4 on CPU, so CI gates this
precision. Served on CPU targets and NVIDIA compute capability 7.0+; not on ROCm.

Activation-aware scaling (AWQ, Lin et al. 2023; the weight-only cousin of SmoothQuant): a few input channels of
each linear layer carry much larger activations than the rest, so their weights matter more, yet NF4 spends its
16 levels per block of 32 weights by the block's largest weight. Each layer's weights are quantized as ``W * s``
per input channel, with ``s = mean|x|^alpha`` over the calibration corpus (``data/calibration.txt``, the int8
route's, disjoint from the gate's verification set); the runtime multiplies the layer's input by ``1/s``
(``<layer>.input_scale``), so the product is unchanged up to the quantization error. ``alpha`` is picked per layer
from a small grid to minimise the layer's output error on the calibration tokens (0 = plain NF4 is on the grid, so
a layer is never made worse on that corpus). Measured in docs/quality.md (``python -m bench.int4_quality``).

Its gate compares the **mean** cosine and a floor on the **1st percentile** (docs/quality.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

from .base import BuildJob, GuideRow, Precision, RouteResult, not_on

if TYPE_CHECKING:
    import torch

    from ..devices import Device
    from ..plan import Plan
    from ..triton.runtime.torch_encoder import SentenceEncoder

CPU_BLOCK_N = 32  # bitsandbytes' CPU NF4 kernel packs output rows in blocks of 32 (asserts out_features % 32 == 0)
MAX_CALIBRATION_TOKENS = 4096  # per layer input: enough for the per-channel means and the grid's error estimate


@dataclass(frozen=True)
class Recipe:
    """How the route stores the linear layers; :data:`RECIPE` is what builds use, other recipes are what
    ``bench.int4_quality`` measures it against."""

    blocksize: int = 32  # bitsandbytes' smallest NF4 block (64, 128 ... are coarser)
    double_quant: bool = True  # 8-bit block statistics (compress_statistics)
    alphas: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)  # activation-aware grid; (0.0,) = plain NF4
    int8_layers: tuple[str, ...] = ()  # layer names ending so are stored int8 per row instead of NF4

    def describe(self) -> str:
        awq = f"activation-aware scales (alpha grid {list(self.alphas)})" if self.alphas != (0.0,) else "no scaling"
        kept = f", int8 rows for {list(self.int8_layers)}" if self.int8_layers else ""
        return (f"bitsandbytes nf4 blocksize {self.blocksize}, "
                f"{'double-quantized' if self.double_quant else 'fp32'} statistics, {awq}{kept}")


RECIPE = Recipe()


def supported_on(device: Device) -> str | None:
    capability = device.cuda_capability
    if device.kind == "cpu" or (capability is not None and capability >= (7, 0)):
        return None
    return not_on(device, "int4")


def cuda_compute_dtype(plan: Plan | None) -> str:
    """The GPU compute dtype: bf16 for a model stored in bf16 on a target that has bf16, else fp16.

    Why: models trained in bf16 can carry activations beyond fp16's range (EmbeddingGemma's card says its
    activations do not support float16), and NF4 weights do not change the activations' dtype needs.
    """
    if plan is not None and plan.native_dtype == "bfloat16" and plan.device.startswith("cuda"):
        from ..devices import parse_device

        if "bf16" in parse_device(plan.device).supported:
            return "bfloat16"
    return "float16"


def _quantize_4bit(weight: torch.Tensor, recipe: Recipe):
    import bitsandbytes.functional as bnbf

    return bnbf.quantize_4bit(weight.float().contiguous(), blocksize=recipe.blocksize, quant_type="nf4",
                              compress_statistics=recipe.double_quant)


def nf4(weight: torch.Tensor, name: str, recipe: Recipe = RECIPE) -> dict[str, torch.Tensor]:
    """bitsandbytes NF4 packing, keyed exactly as ``Linear4bit`` saves itself (``<name>`` = "<module>.weight")."""
    packed, state = _quantize_4bit(weight, recipe)
    return {name: packed, **{f"{name}.{k}": v for k, v in state.as_dict(packed=True).items()}}


def nf4_roundtrip(weight: torch.Tensor, recipe: Recipe = RECIPE) -> torch.Tensor:
    """What the runtime computes with: ``weight`` quantized to NF4 and dequantized by bitsandbytes (on CPU its
    ``Linear4bit`` dequantizes and multiplies exactly so)."""
    import bitsandbytes.functional as bnbf

    return bnbf.dequantize_4bit(*_quantize_4bit(weight, recipe)).float()


def int8_rows(weight: torch.Tensor, name: str) -> dict[str, torch.Tensor]:
    """Symmetric int8 per row: ``weight ≈ int8 * scale[row]``."""
    import torch

    from ..triton.runtime.torch_encoder import INT8_SUFFIX, SCALE_SUFFIX

    scale = (weight.abs().amax(dim=1) / 127.0).clamp(min=1e-12)
    q = torch.round(weight / scale.unsqueeze(1)).clamp(-127, 127).to(torch.int8)
    return {name + INT8_SUFFIX: q, name + SCALE_SUFFIX: scale.half()}


def linear_layers(encoder: SentenceEncoder, kept: Iterable[str] | None = None) -> dict[str, torch.nn.Linear]:
    """The transformer's linear layers that go NF4, by module name (Dense layers after pooling stay fp16, and so
    do those of :func:`kept_fp16`, unless given as ``kept``)."""
    from torch import nn

    kept = set(kept_fp16(encoder) if kept is None else kept)
    return {name: module for name, module in encoder.named_modules()
            if isinstance(module, nn.Linear) and name.startswith("transformer.") and name not in kept}


def kept_fp16(encoder: SentenceEncoder) -> list[str]:
    """Transformer linears stored fp16 instead of NF4: modules transformers keeps in fp32 (T5's feed-forward "wo",
    whose forward casts activations to the weight's dtype, uint8 for a 4-bit weight) and layers whose output
    width bitsandbytes' CPU kernel cannot pack (not a multiple of :data:`CPU_BLOCK_N`)."""
    from torch import nn

    keep = set(getattr(encoder.transformer, "_keep_in_fp32_modules", None) or ())
    return [name for name, module in encoder.named_modules()
            if isinstance(module, nn.Linear) and name.startswith("transformer.")
            and (keep & set(name.split(".")) or module.out_features % CPU_BLOCK_N)]


def layer_inputs(encoder: SentenceEncoder, layers: Iterable[str],
                 batches: Iterable[dict]) -> dict[str, torch.Tensor]:
    """The inputs each layer sees on ``batches`` (real tokens only, at most :data:`MAX_CALIBRATION_TOKENS` rows,
    an even spread), recorded by forward pre-hooks on the fp32 encoder. A layer whose input is not per token
    (e.g. the pooler's, or a relative-position table) counts every row; a layer never called gets no entry (it is
    then stored as plain NF4)."""
    import torch

    seen: dict[str, list[torch.Tensor]] = {name: [] for name in layers}
    mask: list[torch.Tensor] = []

    def record(name: str):
        def hook(_module, args):
            x = args[0]
            per_token = x.dim() == 3 and tuple(x.shape[:2]) == tuple(mask[0].shape)
            seen[name].append(x[mask[0]] if per_token else x.reshape(-1, x.shape[-1]))
        return hook

    handles = [encoder.get_submodule(name).register_forward_pre_hook(record(name)) for name in seen]
    try:
        with torch.inference_mode():
            for feeds in batches:
                tensors = [torch.as_tensor(feeds[n]) for n in encoder.input_names]
                mask[:] = [torch.as_tensor(feeds["attention_mask"]).bool()]
                encoder(*tensors)
    finally:
        for handle in handles:
            handle.remove()
    out = {}
    for name, parts in seen.items():
        if not parts:
            continue
        x = torch.cat(parts).float()
        step = max(1, x.shape[0] // MAX_CALIBRATION_TOKENS)
        out[name] = x[::step][:MAX_CALIBRATION_TOKENS]
    return out


def input_scale(weight: torch.Tensor, x: torch.Tensor, recipe: Recipe = RECIPE) -> tuple[torch.Tensor, float]:
    """The per-input-channel ``s`` (and its ``alpha``) whose NF4 quantization of ``weight * s`` gives the smallest
    output error ``|x W^T - (x / s) Q(W s)^T|`` on ``x``; ``alpha = 0`` is plain NF4 (``s = 1``)."""

    magnitude = x.abs().mean(dim=0).clamp(min=1e-5)
    reference = x @ weight.T
    best: tuple[float, torch.Tensor, float] | None = None
    for alpha in recipe.alphas:
        s = magnitude ** alpha
        s = s / (s.max() * s.min()).sqrt()  # centred on 1, so neither x / s nor W * s leaves fp16's range
        s = 1.0 / (1.0 / s).half().float()  # the runtime multiplies by the stored fp16 1/s: quantize with that s
        error = float(((x / s) @ nf4_roundtrip(weight * s, recipe).T - reference).pow(2).mean())
        if best is None or error < best[0]:
            best = (error, s, alpha)
    assert best is not None
    return best[1], best[2]


def quantize(encoder: SentenceEncoder, recipe: Recipe = RECIPE, calibration: dict[str, torch.Tensor] | None = None,
             linears: dict[str, torch.nn.Linear] | None = None) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """The artefact's tensors (see :mod:`exporter.triton.runtime.torch_encoder` for the formats) and the alpha
    chosen per NF4 layer. ``calibration``: :func:`layer_inputs` (needed unless ``recipe.alphas == (0.0,)``);
    ``linears``: :func:`linear_layers`, when the caller has them already."""
    from torch import nn

    from ..triton.runtime.torch_encoder import INPUT_SCALE_SUFFIX

    linears = linear_layers(encoder) if linears is None else linears
    tensors: dict[str, torch.Tensor] = {}
    alphas: dict[str, float] = {}
    quantized: set[str] = set()
    for name, module in encoder.named_modules():
        key = f"{name}.weight"
        if name in linears:
            weight = module.weight.data.float()
            if recipe.int8_layers and name.endswith(recipe.int8_layers):
                tensors.update(int8_rows(weight, key))
            elif recipe.alphas == (0.0,) or calibration is None or name not in calibration:
                tensors.update(nf4(weight, key, recipe))
            else:
                s, alphas[name] = input_scale(weight, calibration[name], recipe)
                tensors.update(nf4(weight * s, key, recipe))
                if alphas[name]:
                    tensors[name + INPUT_SCALE_SUFFIX] = (1.0 / s).half()  # exact: s was rounded so
        elif isinstance(module, nn.Embedding):
            tensors.update(int8_rows(module.weight.data, key))
        else:
            continue
        quantized.add(key)
    for key, value in encoder.state_dict().items():
        if key not in quantized:
            tensors[key] = value.half() if value.is_floating_point() else value
    return tensors, alphas


def build(job: BuildJob, work: Path, recipe: Recipe = RECIPE) -> RouteResult:
    from ._torch import load_fp32, save
    from .int8 import calibration_batches, calibration_texts

    result = RouteResult(files=[], fp32_bytes=0)
    encoder = load_fp32(job, result)
    kept = kept_fp16(encoder)
    linears = linear_layers(encoder, kept)
    calibration = None
    if recipe.alphas != (0.0,):
        with result.timed("calibrate"):
            calibration = layer_inputs(encoder, linears, calibration_batches(job, calibration_texts()))
    with result.timed("quantize"):
        tensors, alphas = quantize(encoder, recipe, calibration, linears)
    save(job, work, tensors, {"cpu": "float32", "cuda": cuda_compute_dtype(job.plan)}, result,
         quantization={"linear": recipe.describe(), "embeddings": "int8 per row, fp16 scales", "other": "float16"})
    result.details["int4"] = {"linear": "nf4", "embeddings": "int8 rows", "recipe": recipe.describe(),
                              "alpha_per_layer": alphas, "linear_kept_fp16": kept}
    return result


PRECISION = Precision(
    name="int4", route="torch-bnb-nf4", runtime="torch",
    description="bitsandbytes NF4 Linear4bit, activation-aware scales, torch python-backend model",
    guide=GuideRow(memory="12.5%", speed="4-5x", loss="significant"),
    gate_threshold=0.96, gate_statistic="mean_cosine", gate_p1=0.90, spearman_tolerance=0.015,
    build=build, supported_on=supported_on,
    quantization_scheme="bitsandbytes NF4 (Linear4bit), activation-aware scales, embeddings in 8 bits",
    quantization_method=True,
)
