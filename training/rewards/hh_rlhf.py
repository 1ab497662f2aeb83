"""HH-RLHF transcripts as preference pairs.

`read_hh_rlhf` reads the common `{"chosen": str, "rejected": str}` transcript format
(`"\\n\\nHuman: ...\\n\\nAssistant: ..."`): both transcripts must share every message but the
last assistant turn, which becomes `chosen` / `rejected`. Reason codes beyond the annotation reader's:
`unparseable_transcript`, `prefix_mismatch`, `identical_responses`, `empty_text`.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable
from pathlib import Path

import polars as pl

from pipeline.digest import digest
from training.rewards.annotation_records import Reject, checked_field, read_records, source_label
from training.rewards.annotation_set import PAIRS, AnnotationSet

_HH_TURN = re.compile(r"\n\n(Human|Assistant):")
_HH_ROLE = {"Human": "user", "Assistant": "assistant"}


def parse_hh_transcript(text: str) -> list[dict[str, str]]:
    """Split an HH-RLHF transcript into `{role, content}` messages; raises ValueError if it is not one."""
    parts = _HH_TURN.split(text)
    if parts[0].strip() or len(parts) < 3:
        raise ValueError("a transcript starts with '\\n\\nHuman:' and has at least one turn")
    return [{"role": _HH_ROLE[parts[i]], "content": parts[i + 1].strip()} for i in range(1, len(parts), 2)]


def split_hh_pair(chosen: str, rejected: str) -> tuple[list[dict[str, str]], str, str]:
    """Shared prompt messages and the two final assistant responses of an HH-RLHF record.

    Raises ValueError (with a quarantine reason code in `.code`) when the pair is unusable.
    """
    try:
        c_msgs, r_msgs = parse_hh_transcript(chosen), parse_hh_transcript(rejected)
    except ValueError as err:
        raise Reject("unparseable_transcript", str(err)) from None
    for msgs in (c_msgs, r_msgs):
        if msgs[-1]["role"] != "assistant" or len(msgs) < 2 or msgs[-2]["role"] != "user":
            raise Reject("unparseable_transcript", "a transcript must end with a user turn then an assistant turn")
    prefix = c_msgs[:-1]
    if prefix != r_msgs[:-1]:
        raise Reject("prefix_mismatch", "chosen and rejected differ before their last assistant turn")
    c_resp, r_resp = c_msgs[-1]["content"], r_msgs[-1]["content"]
    if not c_resp or not r_resp:
        raise Reject("empty_text", f"the {'chosen' if not c_resp else 'rejected'} response is empty")
    if c_resp == r_resp:
        raise Reject("identical_responses", "chosen and rejected responses are identical")
    return prefix, c_resp, r_resp


def read_hh_rlhf(
    source: str | Path | Iterable[str],
    *,
    source_name: str = "hh_rlhf",
    source_file: str | None = None,
    day: dt.date | None = None,
) -> AnnotationSet:
    """Read `{"chosen": str, "rejected": str}` transcripts into `pairs` (margin 0: HH states no strength)."""

    def parse(obj: dict, line_no: int) -> tuple[str, dict]:
        prompt, chosen, rejected = split_hh_pair(checked_field(obj, "chosen", str), checked_field(obj, "rejected", str))
        pair_id = f"{source_name}:" + digest(prompt, chosen, rejected)[:16]
        row = {
            "pair_id": pair_id,
            "prompt_id": None,
            "prompt": prompt,
            "chosen": chosen,
            "rejected": rejected,
            "source": source_name,
            "margin": 0.0,
            "day": day,
        }
        return pair_id, row

    pairs, quarantine, read = read_records(
        source, parse, source_label(source, source_file), day, "the same pair appeared earlier in the input"
    )
    return AnnotationSet(pairs=pl.DataFrame(pairs, schema=PAIRS), quarantine=quarantine, records_read=read)
