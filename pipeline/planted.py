"""A planted duplicate set with known ground truth, built from real texts, to measure dedup.

From a list of real texts, `build_planted_duplicates` picks distinct originals and adds:

- exact variants: edits that normalization undoes (case, punctuation next to spaces or at the
  end, repeated punctuation, extra whitespace, fullwidth letters). Exact dedup must catch them.
- near variants: small content edits (1–2 character typos, two adjacent words swapped, a word
  inserted or removed, a paraphrase-like substitution: contraction or synonym). A text gets one
  edit per `chars_per_edit` normalized characters (at least one), so the variant stays the same
  text in substance whatever its length. Near dedup must catch them.
- neighbours: texts that share a large part with an original but are different texts: its first
  half or first 70% of words followed by other real text as long as the part replaced, or the
  whole original followed by other real text at least as long (Jaccard with the original about
  0.3-0.55). They are their own groups: merging one with its original is a false positive.

Every row has `truth_group`: rows of one group are duplicates of each other, rows of different
groups are not. `score_drops` turns a DROPS frame into precision/recall against that truth.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date

import polars as pl

from pipeline.text_hash import normalize_text

ORIGINAL, EXACT, NEAR, NEIGHBOUR = "original", "exact", "near", "neighbour"

FILLERS = ("really", "just", "actually", "so", "like", "totally", "honestly", "maybe")
SWAPS = {
    "do not": "don't", "don't": "do not", "i am": "i'm", "i'm": "i am", "it is": "it's", "it's": "it is",
    "cannot": "can't", "can't": "cannot", "you are": "you're", "you're": "you are", "good": "great",
    "great": "good", "movie": "film", "really": "very", "very": "really", "yeah": "yes", "yes": "yeah",
    "awesome": "amazing", "amazing": "awesome", "like": "love", "love": "like", "big": "large",
    "little": "small", "small": "little", "happy": "glad", "glad": "happy", "fun": "cool", "cool": "fun",
}  # fmt: skip
_SWAP_RE = re.compile(r"(?i)\b(" + "|".join(re.escape(k) for k in sorted(SWAPS, key=len, reverse=True)) + r")\b")
_FULLWIDTH = {c: chr(ord(c) + 0xFEE0) for c in "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"}


@dataclass
class PlantedConfig:
    n_originals: int = field(default=300, metadata={"help": "Distinct originals to pick from the real texts."})
    exact_variants: int = field(default=1, metadata={"help": "Exact variants per original."})
    near_variants: int = field(default=2, metadata={"help": "Near variants per original."})
    neighbours: int = field(default=1, metadata={"help": "Distinct near-neighbours per original (must not merge)."})
    min_chars: int = field(default=60, metadata={"help": "Shortest normalized original."})
    max_chars: int = field(default=3000, metadata={"help": "Longest normalized original."})
    chars_per_edit: int = field(
        default=80,
        metadata={"help": "A near variant gets one edit per this many normalized characters (>= 1)."},
    )
    seed: int = field(default=0, metadata={"help": "Random seed: the same texts and seed give the same set."})
    day: date = field(default=date(2024, 1, 1), metadata={"help": "Value of the `day` column."})

    def __post_init__(self) -> None:
        if self.n_originals < 1:
            raise ValueError("PlantedConfig.n_originals must be >= 1")
        if min(self.exact_variants, self.near_variants, self.neighbours) < 0:
            raise ValueError("PlantedConfig.exact_variants/near_variants/neighbours must be >= 0")
        if self.min_chars < 20 or self.max_chars < self.min_chars:
            raise ValueError("PlantedConfig.min_chars must be >= 20 and <= max_chars")
        if self.chars_per_edit < 20:
            raise ValueError("PlantedConfig.chars_per_edit must be >= 20")


# --- exact variants: normalization undoes them -------------------------------------------------------


def _exact_edit(text: str, rng: random.Random) -> tuple[str, str]:
    kind = rng.choice(["upper", "lower", "punct", "space", "fullwidth"])
    if kind == "upper":
        return text.upper(), kind
    if kind == "lower":
        return text.lower(), kind
    if kind == "punct":
        # punctuation becomes a space in normalization, so it may only change next to existing spaces
        out = re.sub(r"([.,!?])(?=\s|$)", lambda m: m.group(1) * rng.randint(2, 3), text)
        out = re.sub(r"\s([a-zA-Z])", lambda m: (" , " if rng.random() < 0.1 else " ") + m.group(1), out)
        return out.rstrip(".!? ") + rng.choice(["!!", "?", "...", ""]), kind
    if kind == "space":
        return "  " + re.sub(r" ", lambda m: " " * rng.randint(1, 3), text) + " \t", kind
    return "".join(_FULLWIDTH.get(c, c) for c in text), kind


# --- near variants: small content edits ----------------------------------------------------------------


def _typo(words: list[str], rng: random.Random) -> bool:
    idx = [i for i, w in enumerate(words) if len(w) >= 4 and w.isalpha()]
    if not idx:
        return False
    i = rng.choice(idx)
    w = words[i]
    p = rng.randrange(1, len(w) - 1)
    op = rng.choice(["sub", "del", "ins", "swap"])
    letter = rng.choice("abcdefghijklmnopqrstuvwxyz")
    if op == "sub":
        w = w[:p] + letter + w[p + 1 :]
    elif op == "del":
        w = w[:p] + w[p + 1 :]
    elif op == "ins":
        w = w[:p] + letter + w[p:]
    else:
        w = w[: p - 1] + w[p] + w[p - 1] + w[p + 1 :]
    words[i] = w
    return True


def _swap(words: list[str], rng: random.Random) -> bool:
    if len(words) < 3:
        return False
    i = rng.randrange(0, len(words) - 1)
    words[i], words[i + 1] = words[i + 1], words[i]
    return True


def _insert(words: list[str], rng: random.Random) -> bool:
    words.insert(rng.randrange(0, len(words) + 1), rng.choice(FILLERS))
    return True


def _delete(words: list[str], rng: random.Random) -> bool:
    idx = [i for i, w in enumerate(words) if len(w) >= 2]
    if len(words) < 4 or not idx:
        return False
    del words[rng.choice(idx)]
    return True


def _paraphrase(words: list[str], rng: random.Random) -> bool:
    text = " ".join(words)
    hits = list(_SWAP_RE.finditer(text))
    if not hits:
        return False
    m = rng.choice(hits)
    new = text[: m.start()] + SWAPS[m.group(1).lower()] + text[m.end() :]
    words[:] = new.split(" ")
    return True


_NEAR_EDITS = {"typo": _typo, "swap": _swap, "insert": _insert, "delete": _delete, "paraphrase": _paraphrase}


def _near_edit(text: str, n_edits: int, rng: random.Random, avoid: set[str]) -> tuple[str, str]:
    # split on single spaces so line breaks and the rest of the layout stay in place
    for _ in range(50):
        words = text.split(" ")
        done: list[str] = []
        while len(done) < n_edits:
            name = rng.choice(list(_NEAR_EDITS))
            if _NEAR_EDITS[name](words, rng):
                done.append(name)
        out = " ".join(words)
        # swapping two equal words changes nothing, and two variants may get the same edit: either
        # would be an exact duplicate, not a near one
        if normalize_text(out) not in avoid:
            return out, "+".join(done)
    raise ValueError("build_planted_duplicates: could not make a distinct near variant; raise min_chars")


# --- neighbours: share a lot, still different texts -------------------------------------------------------


class _Donors:
    """Real texts handed out once each, so two neighbours never share new text (that would make
    them near-duplicates of each other)."""

    def __init__(self, texts: list[str]) -> None:
        self.texts, self.next = texts, 0

    def take(self, n_chars: int) -> str:
        out = ""
        while len(out) < n_chars:
            if self.next >= len(self.texts):
                raise ValueError("build_planted_duplicates: ran out of distinct texts for neighbours; pass more texts")
            out = (out + "\n" if out else "") + self.texts[self.next]
            self.next += 1
        return out


def _neighbour(text: str, donors: _Donors, rng: random.Random) -> tuple[str, str]:
    """A different text sharing a prefix with `text`: the kept part is at most as long as the new part
    (Jaccard ~0.3-0.5), or 70% of it followed by new text as long as the 30% replaced (~0.5)."""
    words = text.split(" ")
    kind = rng.choice(["half_swapped", "tail_replaced", "continued"])
    if kind == "continued":
        return text + "\n" + donors.take(len(text)), kind
    cut = len(words) // 2 if kind == "half_swapped" else (len(words) * 7) // 10
    head = " ".join(words[:cut])
    return head + " " + donors.take(len(text) - len(head)), kind


def build_planted_duplicates(texts: Sequence[str], config: PlantedConfig | None = None) -> pl.DataFrame:
    """Planted set: columns prompt_id, text, day, truth_group, kind (original|exact|near|neighbour), edit,
    exact_group (the truth of exact dedup: an original with its exact variants).

    Ids are shuffled, so an original is not always the first of its group in id order.
    """
    config = config or PlantedConfig()
    rng = random.Random(config.seed)
    pool, seen = [], set()
    for t in texts:
        n = normalize_text(t)
        if config.min_chars <= len(n) <= config.max_chars and n not in seen:
            seen.add(n)
            pool.append(t)
    if len(pool) < 2 * config.n_originals:
        raise ValueError(
            f"build_planted_duplicates: {len(pool)} distinct texts of {config.min_chars}-{config.max_chars} "
            f"normalized chars, need {2 * config.n_originals} (originals and neighbour material): "
            "pass more texts or lower n_originals/min_chars"
        )
    rng.shuffle(pool)
    originals = pool[: config.n_originals]
    donors = _Donors(pool[config.n_originals :])

    rows: list[tuple[str, int, str, str]] = []  # text, truth group, kind, edit
    next_group = config.n_originals
    for g, text in enumerate(originals):
        rows.append((text, g, ORIGINAL, ""))
        for _ in range(config.exact_variants):
            variant, edit = _exact_edit(text, rng)
            rows.append((variant, g, EXACT, edit))
        n_edits = max(1, len(normalize_text(text)) // config.chars_per_edit)
        made = {normalize_text(text)}
        for _ in range(config.near_variants):
            variant, edit = _near_edit(text, n_edits, rng, made)
            made.add(normalize_text(variant))
            rows.append((variant, g, NEAR, edit))
        for _ in range(config.neighbours):
            variant, edit = _neighbour(text, donors, rng)
            rows.append((variant, next_group, NEIGHBOUR, edit))
            next_group += 1
    ids = [f"p{i:06d}" for i in rng.sample(range(len(rows) * 10), len(rows))]
    return pl.DataFrame(
        {
            "prompt_id": ids,
            "text": [r[0] for r in rows],
            "day": [config.day] * len(rows),
            "truth_group": [r[1] for r in rows],
            "kind": [r[2] for r in rows],
            "edit": [r[3] for r in rows],
            # exact-duplicate truth: an original and its exact variants; every other row stands alone
            "exact_group": [r[1] if r[2] in (ORIGINAL, EXACT) else -1 - i for i, r in enumerate(rows)],
        },
        schema_overrides={"day": pl.Date, "truth_group": pl.Int64, "exact_group": pl.Int64},
    )


def score_drops(
    frame: pl.DataFrame, drops: pl.DataFrame, truth_col: str = "truth_group", id_col: str = "prompt_id"
) -> dict[str, float]:
    """Precision/recall of `drops` against `frame`'s truth groups (`exact_group` to score exact dedup).

    A drop is correct when the dropped row and its kept row are in one group; a kept id outside
    `frame` (an earlier day's row, `seen:<hash>`) counts as wrong, so score one run's frame. The drops
    a perfect dedup makes on `frame` are, per group, all its rows but one.
    """
    truth = dict(zip(frame.get_column(id_col).to_list(), frame.get_column(truth_col).to_list()))
    expected = frame.height - frame.get_column(truth_col).n_unique()
    rows = drops.get_column("row_id").to_list()
    kept = drops.get_column("kept_id").to_list()
    correct = sum(1 for r, k in zip(rows, kept) if k in truth and truth.get(r) == truth[k])
    return {
        "drops": len(rows),
        "expected": expected,
        "correct": correct,
        "precision": correct / len(rows) if rows else 1.0,
        "recall": correct / expected if expected else 1.0,
    }
