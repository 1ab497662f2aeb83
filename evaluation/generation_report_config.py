"""The generations report's settings: its title, the chart's win-rate lines and the release rule it states."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class GenerationReportConfig:
    title: str = field(default="CharacterFlywheel generations", metadata={"help": "Title of the page."})
    win_rate_warn: float = field(default=0.60, metadata={"help": "Win-rate warning line drawn on the chart."})
    win_rate_ceiling: float = field(default=0.65, metadata={"help": "Win-rate ceiling line drawn on the chart."})
    hash_chars: int = field(default=12, metadata={"help": "Characters of a content hash shown in tables."})
    min_decided_gates: int = field(
        default=3, metadata={"help": "The release rule's fewest decided gates, stated above the verdicts."}
    )

    @property
    def release_rule(self) -> str:
        return (
            f"a generation is released when no gate failed and at least {self.min_decided_gates} gates had the "
            "evidence to decide; a verdict with insufficient evidence neither passes nor blocks."
        )

    def __post_init__(self) -> None:
        if not 0.5 <= self.win_rate_warn <= self.win_rate_ceiling <= 1:
            raise ValueError("need 0.5 <= win_rate_warn <= win_rate_ceiling <= 1 (defaults 0.60 and 0.65)")
        if self.hash_chars < 4:
            raise ValueError(f"hash_chars={self.hash_chars} must be >= 4")
        if self.min_decided_gates < 0:
            raise ValueError(f"min_decided_gates={self.min_decided_gates} must be >= 0 (default 3)")
