"""Precision resolution: one :class:`Plan` per model, with the reason chain of the guide's precedence.

Precedence (the precision guide): 1 per-model override > 2 global setting > 3 the model's native dtype >
4 device capability > 5 fp32 default. Every step leaves one line in ``Plan.reasons`` (decided, not applicable or
not consulted), and every fallback taken adds a line, so ``exporter plan`` explains each choice completely.

:func:`make_plans` is the one way in from a config and a model list (the CLI, the tests and the benchmarks use it);
:func:`resolve` and :func:`resolve_as` plan one model.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from .config import PREFIX, Config
from .devices import Device, resolve_device
from .errors import ModelError
from .models import (
    ModelSpec,
    check_max_length,
    dtype_of,
    needs_remote_code,
    read_config,
    resolve_model_dir,
    specs_from_args,
)
from .precisions import QUANTIZATION_METHODS, for_native_dtype, get

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MemoryPlan:
    """What EMB_PROVIDER_ENABLE_GPU_MEMORY_OPTIMIZATION changes for this model (later stages read only this)."""

    enabled: bool
    ort_arena_extend_strategy: str = "kNextPowerOfTwo"
    ort_gpu_mem_limit_bytes: int | None = None
    instance_count: int = 1
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Plan:
    """The resolved build decision for one model: a plain, serialisable value object."""

    model: str
    name: str
    group: str | None
    device: str
    requested: str
    precision: str
    route: str
    runtime: str
    native_dtype: str | None
    decided_by: str
    quantization: dict[str, Any]
    memory: MemoryPlan
    max_length: int | None = None
    reasons: tuple[str, ...] = field(default_factory=tuple)
    prompts: dict[str, str] | None = None  # models-file overrides of the model's prompts (by name)
    truncate_dim: int | None = None  # models-file default output width (Matryoshka truncation by clients)
    pooling: tuple[str, ...] | None = None  # the models file's override of the model's Pooling modes
    remote_code: bool = False  # the architecture is the model's own code (config.json auto_map)
    trust_remote_code: bool = False  # the models file allows that code to run (as --trust-remote-code does)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["reasons"] = list(self.reasons)
        data["memory"]["notes"] = list(self.memory.notes)
        return data


def match_override(spec: ModelSpec, overrides: dict[str, str] | Any) -> tuple[str, str] | None:
    """The override that applies to ``spec``: by model id, then repository name, then group label."""
    for key in (spec.model, spec.name, spec.group):
        if key is not None and key in overrides:
            return key, overrides[key]
    return None


def unmatched_override_keys(specs: Iterable[ModelSpec], overrides: Iterable[str]) -> list[str]:
    """Override keys that name no model, name or group among ``specs`` (likely typos)."""
    known = {k for s in specs for k in (s.model, s.name, s.group) if k is not None}
    return sorted(k for k in overrides if k not in known)


def _memory_plan(config: Config, device: Device) -> MemoryPlan:
    if not config.enable_gpu_memory_optimization:
        return MemoryPlan(enabled=False)
    if not device.is_gpu:
        return MemoryPlan(enabled=True, ort_arena_extend_strategy="kSameAsRequested",
                          notes=("CPU target: ORT arena grows only as requested; no GPU settings apply",))
    return MemoryPlan(
        enabled=True,
        ort_arena_extend_strategy="kSameAsRequested",
        instance_count=1,
        notes=("ONNX routes: the CUDA arena grows only as requested (less memory at load; on large models it can "
               "fragment and peak higher: docs/benchmarks/gpu.md)",
               "torch routes: CUDA caching allocator with expandable segments (memory reused across batch shapes)",
               "one model instance per GPU"),
    )


def resolve(spec: ModelSpec, config: Config, device: Device, native: str | None = None, *,
            remote_code: bool = False) -> Plan:
    """Resolve the precision of one model for one target, recording every step and fallback."""
    reasons: list[str] = []
    chosen: str | None = None
    decided_by = ""
    requested = "auto"
    origin = ""  # how to name the request in fallback messages

    # 1. per-model override (env JSON, or the models file's 'precision')
    hit = match_override(spec, config.model_precision_overrides)
    if hit is None and spec.precision is not None:
        hit = ("models file", spec.precision)
    override_auto = False
    if hit is None:
        reasons.append("1 per-model override: none")
    else:
        key, value = hit
        source = ("models file 'precision'" if key == "models file"
                  else f"{PREFIX}MODEL_PRECISION_OVERRIDES[{key!r}]")
        if value == "auto":
            override_auto = True
            reasons.append(f"1 per-model override: auto by {source} (global setting not applied)")
        else:
            chosen, decided_by, requested, origin = value, "override", value, source
            reasons.append(f"1 per-model override: {value} by {source} -> decides")

    # 2. global setting (precision, or quantization method when quantization is enabled)
    if chosen is not None or override_auto:
        reasons.append(f"2 global setting: not consulted ({config.model_precision})")
    elif config.model_precision != "auto":
        chosen, decided_by = config.model_precision, "global"
        requested, origin = chosen, f"{PREFIX}MODEL_PRECISION"
        reasons.append(f"2 global setting: {chosen} by {PREFIX}MODEL_PRECISION -> decides")
    elif config.enable_quantization:
        chosen, decided_by = config.quantization_method, "global"
        requested, origin = chosen, f"{PREFIX}QUANTIZATION_METHOD"
        reasons.append(f"2 global setting: {PREFIX}ENABLE_QUANTIZATION=true with "
                       f"{PREFIX}QUANTIZATION_METHOD={chosen} -> decides")
    else:
        reasons.append("2 global setting: auto")

    if (chosen in QUANTIZATION_METHODS and "QUANTIZATION_METHOD" in config.explicit
            and config.quantization_method != chosen):
        msg = (f"{PREFIX}QUANTIZATION_METHOD={config.quantization_method} contradicts {chosen} requested by "
               f"{origin} for {spec.model}; the explicit precision {chosen} wins")
        log.warning(msg)
        reasons.append(f"   note: {msg}")

    # 3. the model's native dtype: only half-precision storage decides; float32 is just the storage default
    if chosen is not None:
        reasons.append(f"3 native dtype: {native or 'unknown'} (not consulted)")
    else:
        native_precision = for_native_dtype(native)
        if native_precision is None:
            stored = native or "not recorded in config.json (float32)"
            reasons.append(f"3 native dtype: {stored} is only the storage default and does not decide")
        elif native_precision in device.supported:
            chosen, decided_by, requested = native_precision, "native", native_precision
            reasons.append(f"3 native dtype: {native} -> {native_precision} on {device.label} -> decides")
        else:
            reasons.append(f"3 native dtype: {native} but {device.label} has no {native_precision} "
                           "-> device step decides")

    # 4. device capability
    if chosen is None:
        chosen, decided_by = device.recommended, "device"
        reasons.append(f"4 device capability: {device.label} recommends {chosen} -> decides")
    else:
        reasons.append(f"4 device capability: {device.label} supports {', '.join(device.supported)}")

    # fallback when the target cannot run what was asked
    if chosen not in device.supported:
        fallback = device.recommended
        msg = f"{chosen} requested by {origin or decided_by} for {spec.model}; {device.lacks(chosen)} -> {fallback}"
        log.warning(msg)
        reasons.append(f"   fallback: {msg}")
        chosen = fallback
    if chosen == "fp16" and native == "bfloat16":
        _warn_fp16_for_bf16_model(spec, device, reasons)
    reasons.append("5 fp32 default: not reached (the device step always decides)")

    plan = _plan(spec, config, device, native, chosen, requested, decided_by, reasons, remote_code)
    log.debug("plan for %s: device capabilities: %s", spec.model, device.describe())
    log.debug("plan for %s: native precision: %s", spec.model, native or "unknown")
    log.debug("plan for %s: chosen precision: %s (route %s, decided by %s)\n  %s", spec.model, chosen,
              plan.route, decided_by, "\n  ".join(reasons))
    log.debug("plan for %s: quantization: %s; memory optimization: %s", spec.model, plan.quantization, plan.memory)
    return plan


def _warn_fp16_for_bf16_model(spec: ModelSpec, device: Device, reasons: list[str]) -> None:
    """fp16 for a model stored in bf16 is allowed but risky: a model trained in bf16 can carry activations beyond
    fp16's range (EmbeddingGemma's card says its activations do not support float16), which gives inf/NaN
    vectors on some inputs; the gate's few sentences may not hit them. Say so, and what to pick instead."""
    instead = ("bf16 is available on this target" if "bf16" in device.supported
               else f"fp32 avoids it ({device.label} has no bf16)")
    msg = (f"{spec.model} is stored in bfloat16 and will run in fp16: activations of a model trained in bf16 can "
           f"exceed fp16's range (inf/NaN vectors); {instead}")
    log.warning(msg)
    reasons.append(f"   note: {msg}")


def resolve_as(spec: ModelSpec, config: Config, device: Device, precision: str, native: str | None = None, *,
               by: str, remote_code: bool = False) -> Plan:
    """The plan that builds ``precision`` as asked by ``by`` (e.g. ``exporter eval``), whatever the precedence or
    the target would choose: for measuring a precision on this host, not for deployment. The reasons say so, and
    name what the target would do instead when it cannot serve ``precision``."""
    why_not = get(precision).supported_on(device)  # an unknown name fails here, naming the allowed values
    reasons = [f"requested {precision} by {by}: built as asked (precedence and device fallback not applied)"]
    if why_not:
        reasons.append(f"   note: {why_not}; a plan for {device.label} would fall back to {device.recommended}")
    return _plan(spec, config, device, native, precision, precision, "request", reasons, remote_code)


def _remote_code_route(spec: ModelSpec, chosen: str, reasons: list[str]) -> tuple[str, str, str]:
    """(precision, route, runtime) for a model whose architecture is its own code: the torch route only.

    Why never ONNX: exporting would trace code nobody reviewed into a graph, and each model's code needs its own
    export fixes; the torch runtime instead imports the code copied into the artefact, which runs the model exactly
    as sentence-transformers does. A precision without a torch route falls back to fp32 (WARNING).
    """
    precision = get(chosen)
    equivalent = precision.torch_equivalent
    if equivalent is None:
        msg = (f"{chosen} for {spec.model}: its route ({precision.route}) is ONNX only, and a model with remote code "
               f"is served by the torch route only -> fp32")
        log.warning(msg)
        reasons.append(f"   fallback: {msg}")
        chosen, equivalent = "fp32", get("fp32").torch_equivalent
    route = equivalent[0]
    trust = ("allowed by the models file's trust_remote_code" if spec.trust_remote_code
             else "export refuses it unless --trust-remote-code is given")
    reasons.append(f"   remote code: config.json auto_map names the model's own Python code ({trust}); route "
                   f"{route} (torch runtime, code copied into the artefact; ONNX export is not attempted)")
    return chosen, route, "torch"


def _plan(spec: ModelSpec, config: Config, device: Device, native: str | None, chosen: str, requested: str,
          decided_by: str, reasons: list[str], remote_code: bool = False) -> Plan:
    route = runtime = None
    if remote_code:
        chosen, route, runtime = _remote_code_route(spec, chosen, reasons)
    precision = get(chosen)
    quantization = {
        "enabled": config.enable_quantization or precision.quantization_method,
        "method": chosen if precision.quantization_method else None,
        "scheme": precision.quantization_scheme,
    }
    return Plan(
        model=spec.model, name=spec.name, group=spec.group, device=device.label, requested=requested,
        precision=chosen, route=route or precision.route, runtime=runtime or precision.runtime,
        native_dtype=native, decided_by=decided_by, quantization=quantization, memory=_memory_plan(config, device),
        max_length=spec.max_length, reasons=tuple(reasons), pooling=spec.pooling, remote_code=remote_code,
        trust_remote_code=spec.trust_remote_code, prompts=spec.prompts, truncate_dim=spec.truncate_dim,
    )


def resolve_all(specs: list[ModelSpec], config: Config, device: Device,
                natives: dict[str, str | None], remote_code: frozenset[str] = frozenset()) -> list[Plan]:
    """Plans for every model, warning about override keys that match nothing."""
    unmatched = unmatched_override_keys(specs, config.model_precision_overrides)
    if unmatched:
        log.warning("%sMODEL_PRECISION_OVERRIDES keys match no model, name or group: %s", PREFIX,
                    ", ".join(unmatched))
    return [resolve(s, config, device, natives.get(s.model), remote_code=s.model in remote_code) for s in specs]


@dataclass(frozen=True)
class PlanSet:
    """What :func:`make_plans` resolved: the config, the target device, the models, where each model's files are,
    and one plan per model (iterating a PlanSet yields the plans)."""

    config: Config
    device: Device
    specs: list[ModelSpec]
    model_dirs: dict[str, Path | ModelError]  # model id -> local directory, or the ModelError saying why not
    plans: list[Plan]

    def __iter__(self) -> Iterator[Plan]:
        return iter(self.plans)

    def __len__(self) -> int:
        return len(self.plans)

    def model_dir(self, model: str) -> Path:
        """The local directory of ``model``; raises its :class:`ModelError` when it is unavailable."""
        where = self.model_dirs[model]
        if isinstance(where, ModelError):
            raise where
        return where


def make_plans(models: Iterable[str | ModelSpec] | None = None, *, models_file: str | Path | None = None,
               config: Config | None = None, device: str | None = None, precision: str | None = None,
               weights: bool = True) -> PlanSet:
    """Plans for ``models`` on the target device, with the reason chain behind each precision.

    Args:
        models: hub ids or local model directories (their names derived), or :class:`ModelSpec` objects; with
            neither ``models`` nor ``models_file``, the bundled default model.
        models_file: a YAML models file (model, name, group, max_length, precision, pooling, prompts,
            truncate_dim, trust_remote_code),
            added to ``models``.
        config: the settings (default: ``Config.from_env()``, the ``EMB_PROVIDER_*`` variables).
        device: the serving target (e.g. ``"cpu"``, ``"cuda:8.0"``), overriding ``config.device``.
        precision: the global precision for this run, overriding ``config.model_precision``.
        weights: whether hub models are fetched whole (what export and build need); ``False`` fetches only their
            small config files (what a plan reads), so ``model_dirs`` then holds directories without weights.

    Returns:
        A :class:`PlanSet`. A model whose files cannot be found still gets a plan (its native dtype unknown); its
        :class:`ModelError` is kept in ``model_dirs`` and raised by ``PlanSet.model_dir``.

    Raises:
        ConfigError: an invalid setting, device or models file, two models with one name, or a ``max_length``
            beyond a model's position table.
    """
    config = (config or Config.from_env()).with_overrides(device=device, model_precision=precision)
    target = resolve_device(config.device)
    specs = specs_from_args(list(models or []), str(models_file) if models_file else None)
    dirs: dict[str, Path | ModelError] = {}
    for spec in specs:
        try:
            dirs[spec.model] = resolve_model_dir(spec.model, weights=weights)
        except ModelError as exc:
            dirs[spec.model] = exc
    configs = {m: read_config(d) for m, d in dirs.items() if not isinstance(d, ModelError)}
    for spec in specs:
        if spec.model in configs:
            check_max_length(spec.model, spec.max_length, configs[spec.model])
    natives = {m: dtype_of(c) for m, c in configs.items()}
    remote = frozenset(m for m, c in configs.items() if needs_remote_code(c))
    return PlanSet(config, target, specs, dirs, resolve_all(specs, config, target, natives, remote))
