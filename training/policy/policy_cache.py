"""gen-0 built once per corpus: the tiny policy's pre-training is cached outside any one FLYWHEEL_HOME.

A tiny policy that writes chat sentences needs more pre-training than a generation's own steps (minutes, not
seconds, on a CPU). Its inputs are the corpus and the shape and budget in `TinyLlamaConfig`, so the built
folder is kept under a key of exactly those, and a new home, a second `make flywheel` or a `make demo`
after `make clean` copies it instead of pre-training again. Settings that do not change the weights (the
device, CPU threads) are not part of the key.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

from filelock import FileLock

from pipeline.digest import digest, rows_digest
from pipeline.lake import replace_dir, staging_dir
from training.policy.models import TinyLlamaConfig, build_tiny_policy

CACHE_ENV = "FLYWHEEL_CACHE"
# settings of the build that leave the weights as they are
_NOT_KEYED = ("device", "cpu_threads")


def default_cache_root() -> Path:
    """FLYWHEEL_CACHE, else `$XDG_CACHE_HOME/characterflywheel`, else `~/.cache/characterflywheel`."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "characterflywheel"


def cache_key(corpus: list, cfg: TinyLlamaConfig) -> str:
    """What the built weights depend on: the corpus (as the build reads it) and the weight-shaping settings."""
    items = list(corpus)[: cfg.max_corpus_texts] if cfg.max_corpus_texts else list(corpus)
    keyed = {k: v for k, v in asdict(cfg).items() if k not in _NOT_KEYED}
    return digest(rows_digest(items), json.dumps(keyed, sort_keys=True))[:24]


def cached_tiny_policy(
    corpus: list, out_dir: str | Path, cfg: TinyLlamaConfig, cache_root: str | Path | None = None
) -> tuple[dict[str, Any], bool]:
    """The tiny policy for `corpus` and `cfg` in `out_dir`: copied from the cache, or built into the cache first.

    Returns its manifest and whether this call pre-trained it. Two processes asking for the same key wait for
    one build (a file lock); a build killed part-way leaves only a staging folder, never a cached entry."""
    root = Path(cache_root) if cache_root is not None else default_cache_root()
    key = cache_key(corpus, cfg)
    entry = root / "policies" / key
    entry.parent.mkdir(parents=True, exist_ok=True)
    built = False
    with FileLock(str(entry.parent / f".{key}.lock")):
        if not (entry / "policy_manifest.json").is_file():
            tmp = staging_dir(entry)
            try:
                build_tiny_policy(corpus, tmp, cfg)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            replace_dir(tmp, entry)
            built = True
    out = Path(out_dir)
    shutil.copytree(entry, out, dirs_exist_ok=True)
    manifest = json.loads((out / "policy_manifest.json").read_text())
    manifest.update(path=str(out), cache_key=key, pretrained_here=built)
    (out / "policy_manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest, built
