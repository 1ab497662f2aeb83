"""Scrub personal data from message text before it reaches the lake, prompts, embeddings or training sets.

Ingest runs `scrub_step` on accepted text before the landing table is written (and the same detectors on
quarantined payloads, `pipeline.redact`), so no table holds raw PII.

Each detected item is replaced by a typed placeholder (`[EMAIL]`, `[PHONE]`, `[CARD]`, `[IP]`,
`[URL]`, `[HANDLE]`), so a reader still sees that something was there and of which kind.

Detectors (`pipeline.pii_detectors`) run in the order of `PII_TYPES`; each sees the text the previous ones left.
The types and settings are `pipeline.privacy_config`'s.

Not covered (documented limits): obfuscated addresses ("john at gmail dot com"), street addresses,
names, national ids; phone numbers written with an international call prefix other than `+` or the
configured region's (e.g. `0044…` under region US).

Speed: a vectorized pre-filter (polars/Rust regex) picks the rows that hold a digit, an `@`, `://`
or `www.`; only those run through the Python detectors, and within a row each detector first checks
a cheap condition. On chat traffic that is a small fraction of rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from pipeline import schema
from pipeline.pii_detectors import DETECTORS
from pipeline.pii_view import TextView
from pipeline.privacy_config import PII_TYPES, PrivacyConfig
from pipeline.step import StepCounters, StepResult


def scrub_text_with_types(text: str, config: PrivacyConfig) -> tuple[str, dict[str, int]]:
    """`text` with every enabled PII type replaced, and how many items of each type were replaced.

    Detectors read the normalised view of the text (`pipeline.pii_view`), so PII written in another script's
    digits, in full-width forms or with zero-width characters inside is found; the spans they find are
    replaced in the text as written, which keeps its own characters elsewhere."""
    found: dict[str, int] = {}
    view = TextView(text)
    for pii_type in PII_TYPES:
        if pii_type not in config.types:
            continue
        spans = DETECTORS[pii_type](view.view, config)
        if not spans:
            continue
        placeholder = config.placeholder.format(type=pii_type)
        for start, end in sorted((view.span(s, e) for s, e in spans), reverse=True):
            text = text[:start] + placeholder + text[end:]
        found[pii_type] = len(spans)
        view = TextView(text)  # the next detector sees what this one left
    return text, found


def scrub_text(text: str, config: PrivacyConfig | None = None) -> str:
    """`text` with every enabled PII type replaced by its placeholder."""
    return scrub_text_with_types(text, config or PrivacyConfig())[0]


# rows that can hold any PII type: a digit of any script (or a number sign such as a circled digit), an '@'
# (full-width and small forms too), or a link; a format character (a zero-width space) sends a row through
# the detectors as well
_PREFILTER = r"\p{N}|[@\x{FF20}\x{FE6B}]|[:\x{FF1A}\x{FE55}\x{FE13}][/\x{FF0F}]|(?i:[wｗ][wｗ][wｗ][.．。｡])|\p{Cf}"


def scrub_frame(
    df: pl.DataFrame, config: PrivacyConfig | None = None, text_col: str = "text"
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Scrub `df[text_col]` in place of the original text.

    Returns the frame with scrubbed text plus a `pii_types` column (sorted list of the types found in
    that row, empty when none), and a counts frame `(pii_type, items, rows)`: per enabled type, how
    many items were replaced and in how many rows. Null texts stay null. Row order is kept.
    """
    config = config or PrivacyConfig()
    if text_col not in df.columns:
        raise ValueError(f"scrub_frame: frame has no column {text_col!r} (columns: {df.columns}); pass text_col=")
    texts = df.get_column(text_col).cast(pl.Utf8)
    candidates = texts.str.contains(_PREFILTER).fill_null(False)
    idx = candidates.arg_true().to_list()
    new_texts = texts.to_list()
    types_per_row: list[list[str]] = [[] for _ in range(len(new_texts))]
    totals = {t: [0, 0] for t in PII_TYPES if t in config.types}
    for i in idx:
        scrubbed, found = scrub_text_with_types(new_texts[i], config)
        if found:
            new_texts[i] = scrubbed
            types_per_row[i] = sorted(found)
            for t, n in found.items():
                totals[t][0] += n
                totals[t][1] += 1
    out = df.with_columns(
        pl.Series(text_col, new_texts, dtype=pl.Utf8),
        pl.Series("pii_types", types_per_row, dtype=pl.List(pl.Utf8)),
    )
    counts = pl.DataFrame(
        {
            "pii_type": list(totals),
            "items": [v[0] for v in totals.values()],
            "rows": [v[1] for v in totals.values()],
        },
        schema={"pii_type": pl.Utf8, "items": pl.Int64, "rows": pl.Int64},
    )
    return out, counts


@dataclass(frozen=True)
class ScrubCounters(StepCounters):
    rows_with_pii: int
    pii_items: int


def _scrubbed(kept: pl.DataFrame, rows_in: int, counts: pl.DataFrame) -> StepResult[ScrubCounters]:
    """The step's result: scrubbed rows (none dropped), their counters and the per-type `pii_counts`."""
    counters = ScrubCounters(
        rows_in=rows_in,
        rows_kept=kept.height,
        rows_with_pii=int(kept.filter(pl.col("pii_types").list.len() > 0).height),
        pii_items=int(counts["items"].sum()),
    )
    return StepResult(kept, schema.empty(schema.DROPS), counters, tables={"pii_counts": counts})


def scrub_step(df: pl.DataFrame, config: PrivacyConfig | None = None) -> StepResult[ScrubCounters]:
    """`scrub_frame` as a curation step: scrubbing replaces text and drops no row; the per-type counts are
    the `pii_counts` table."""
    scrubbed, counts = scrub_frame(df, config)
    return _scrubbed(scrubbed, df.height, counts)


def landed_scrub_step(
    df: pl.DataFrame, counts: pl.DataFrame | None, config: PrivacyConfig | None = None
) -> StepResult[ScrubCounters]:
    """`scrub_step` over the landing table, which ingest has normally scrubbed already.

    A frame with `pii_types` was scrubbed by `scrub_step` at ingest: it is passed on unchanged with the
    per-type `counts` ingest recorded (scrubbing it again would find nothing and report zeros). A frame
    without it was written before ingest scrubbed (or by hand) and may hold raw text: it is scrubbed now.
    """
    if "pii_types" not in df.columns:
        return scrub_step(df, config)
    if counts is None:
        raise ValueError("the landing table was scrubbed at ingest but its `pii_counts` are missing: re-run ingest")
    counts = counts.select("pii_type", "items", "rows").cast({"items": pl.Int64, "rows": pl.Int64})
    return _scrubbed(df, df.height, counts)
