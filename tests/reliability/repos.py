"""Repository and model-directory fixtures built from the shared build: copies to break, and an integrity check."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from exporter.records import sha256_of


def manifest_mismatches(root: Path) -> list[str]:
    """Files whose bytes differ from what manifest.json records (tokenizer files live in the tokenizer model)."""
    manifest = json.loads((root / "manifest.json").read_text())
    problems = []
    for model in manifest["models"]:
        names = model["triton_models"]
        for rel, record in model["artefact"]["files"].items():
            owner = names["tokenizer"] if rel.startswith("tokenizer/") else names["encoder"]
            path = root / owner / "1" / rel
            if not path.is_file():
                problems.append(f"{path}: missing")
            elif sha256_of(path) != record["sha256"]:
                problems.append(f"{path}: sha256 differs from the manifest")
        for name in names.values():
            if not (root / name / "config.pbtxt").is_file():
                problems.append(f"{root / name}/config.pbtxt: missing")
    return problems


def fp32_only_copy(source: Path, dest: Path) -> None:
    """A published repository holding only the fp32 model: the shared build's files, manifest narrowed to fp32."""
    manifest = json.loads((source / "manifest.json").read_text())
    manifest["models"] = [m for m in manifest["models"] if m["precision"] == "fp32"]
    dest.mkdir()
    for name in manifest["models"][0]["triton_models"].values():
        shutil.copytree(source / name, dest / name)
    for extra in ("README.md", ".gitkeep"):
        shutil.copy2(source / extra, dest / extra)
    (dest / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
