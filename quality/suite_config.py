"""Thresholds of the expectation suites, as one typed config with offline defaults."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from quality.outcomes import SEVERITIES, WARNING

Bands = tuple[tuple[float, float, float], ...]


def _ingest_reason_codes() -> tuple[str, ...]:
    try:
        from pipeline.ingest import REASON_CODES
    except ImportError:  # the ingest step is optional for validating other tables
        return ()
    return tuple(REASON_CODES)


def _check_bands(name: str, bands: Bands) -> None:
    for band in bands:
        if len(band) != 3 or not 0.0 <= band[0] <= 1.0 or band[1] > band[2]:
            raise ValueError(f"{name}: each band is (quantile in [0, 1], low, high) with low <= high; got {band!r}")


@dataclass
class SuiteConfig:
    """Thresholds of the expectation suites. The defaults suit chat traffic and run offline."""

    row_history_days: int = field(
        default=14,
        metadata={"help": "Previous days whose row counts set a daily table's usual row count; 0 turns the band off."},
    )
    row_history_min_days: int = field(
        default=4,
        metadata={"help": "Previous days with rows needed before there is a row-count band at all."},
    )
    row_band_ratio: float = field(
        default=5.0,
        metadata={
            "help": "Floor of the row-count band: today's count within [median / x, median * x] of the previous "
            "days' counts always passes (real traffic is uneven: a replayed day may hold a quarter of the "
            "week's usual count)."
        },
    )
    row_band_sigmas: float = field(
        default=3.0,
        metadata={
            "help": "Half-width of the row-count band in robust standard deviations of the previous days' "
            "log row counts, where wider than the floor."
        },
    )
    row_count_severity: str = field(
        default=WARNING, metadata={"help": "Severity of the row-count band: critical, warning or info."}
    )
    min_rows: int = field(
        default=1,
        metadata={"help": "Fewest rows a table must hold (tables that may be empty, like quarantine, skip it)."},
    )
    max_message_chars: int = field(default=20_000, metadata={"help": "Longest accepted message text, in characters."})
    max_prompt_chars: int = field(
        default=100_000, metadata={"help": "Longest accepted rendered prompt history (`prompts.text`), in characters."}
    )
    max_history_turns: int = field(default=256, metadata={"help": "Most turns a prompt history may hold."})
    max_raw_chars: int = field(default=1_000_000, metadata={"help": "Longest raw record kept in quarantine."})
    message_len_bands: Bands = field(
        default=((0.5, 2.0, 2_000.0), (0.95, 5.0, 10_000.0)),
        metadata={"help": "(quantile, low, high) bands for message length in characters; empty to skip."},
    )
    prompt_len_bands: Bands = field(
        default=((0.5, 5.0, 20_000.0), (0.95, 10.0, 80_000.0)),
        metadata={"help": "(quantile, low, high) bands for prompt history length in characters; empty to skip."},
    )
    distribution_severity: str = field(
        default=WARNING, metadata={"help": "Severity of distribution bands (length quantiles, cluster shares)."}
    )
    user_hash_pattern: str = field(
        default=r"^u_[0-9a-f]{24}$",
        metadata={"help": "Regex every user_hash must match (the salted-hash format); empty string to skip."},
    )
    quarantine_reason_codes: tuple[str, ...] = field(
        default_factory=lambda: _ingest_reason_codes(),
        metadata={
            "help": "Allowed quarantine reason codes (default: the ingest step's codes); "
            "empty accepts any snake_case code."
        },
    )
    splits: tuple[str, ...] = field(
        default=("train", "eval_internal", "eval_user"), metadata={"help": "Allowed values of `prompts.split`."}
    )
    thumbs_values: tuple[int, ...] = field(default=(-1, 0, 1), metadata={"help": "Allowed values of `prompts.thumbs`."})
    max_null_rate: Mapping[str, float] = field(
        # a prompt whose user turn ended the conversation has no served response; most do have one
        default_factory=lambda: {"prompts.served_response": 0.5},
        metadata={"help": "Highest null fraction per 'table.column' for columns that may be null now and then."},
    )
    max_cluster_share: float = field(
        default=0.5, metadata={"help": "Largest share of rows one cluster may take before it is flagged."}
    )
    min_clusters: int = field(default=2, metadata={"help": "Fewest clusters a clustering should produce."})
    share_tolerance: float = field(
        default=1e-6, metadata={"help": "Allowed distance of the sum of cluster shares from 1."}
    )
    example_count: int = field(
        default=5, metadata={"help": "Unexpected values kept as examples per failed expectation."}
    )
    max_example_chars: int = field(default=160, metadata={"help": "Example strings longer than this are cut."})

    def __post_init__(self) -> None:
        if self.row_history_days < 0 or self.row_history_min_days < 1:
            raise ValueError(
                f"row_history_days={self.row_history_days}, row_history_min_days={self.row_history_min_days}: "
                "use row_history_days >= 0 (0 turns the band off) and row_history_min_days >= 1"
            )
        if self.row_band_ratio < 1.0 or self.row_band_sigmas < 0.0:
            raise ValueError(
                f"row_band_ratio={self.row_band_ratio}, row_band_sigmas={self.row_band_sigmas}: use a ratio >= 1 "
                "(e.g. 5.0) and sigmas >= 0 (e.g. 3.0)"
            )
        for name in ("row_count_severity", "distribution_severity"):
            if getattr(self, name) not in SEVERITIES:
                raise ValueError(f"{name}={getattr(self, name)!r}: use one of {SEVERITIES}")
        for name in ("min_rows", "max_message_chars", "max_prompt_chars", "max_history_turns", "max_raw_chars"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}={getattr(self, name)}: use a count >= 0")
        _check_bands("message_len_bands", self.message_len_bands)
        _check_bands("prompt_len_bands", self.prompt_len_bands)
        for key, rate in self.max_null_rate.items():
            if "." not in key or not 0.0 <= rate <= 1.0:
                raise ValueError(f"max_null_rate[{key!r}]={rate}: keys are 'table.column', values fractions in [0, 1]")
        if not 0.0 < self.max_cluster_share <= 1.0:
            raise ValueError(f"max_cluster_share={self.max_cluster_share}: use a fraction in (0, 1]")
        if self.min_clusters < 0 or self.share_tolerance < 0:
            raise ValueError("min_clusters and share_tolerance must be >= 0")
        if self.example_count < 0 or self.max_example_chars < 8:
            raise ValueError("example_count must be >= 0 and max_example_chars >= 8")
