"""IFEval scoring: prompt- and instruction-level accuracy, strict and loose, fully offline.

The checkers are those of the `if-verifiable` package, a maintained copy of the reference IFEval
instruction classes; only its evaluation loop is not used, because it differs from the reference in
ways that move the published figures (it strips `<think>` blocks, scores an empty response as "no
instructions", and builds each checker once for the strict and the loose pass). The loop here follows
the reference `evaluation_lib` exactly:

- strict: an instruction is followed when the response is non-blank and its checker accepts it;
- loose: followed when the checker accepts any of eight variants of the response (as is, without
  `*`, without its first line, its last line, or both, and those three without `*`);
- the strict pass runs over all prompts first, then the loose pass, each building its own checkers.

That last point matters because a checker given an invalid argument draws a replacement at random
from Python's global `random` (two prompts of the public set ask for the frequency of the "letter"
`#` and `!`). The reference does not seed, so its published figures are one draw; here the draws
come from `IFEvalConfig.seed`, with Python's global random state saved and restored around a run.
langdetect, which the language and case checkers call, is seeded the same way.

Two checkers need NLTK's English Punkt model, which `evaluation.nltk_punkt` provides offline. The input
files are read by `evaluation.ifeval_files`.

Responses are matched to prompts by prompt text, as the reference does. A response file written for
an older revision of the prompts can be aligned by line position instead (`join`), which the public
GPT-4 responses need: one prompt's text was edited after they were generated.
"""

from __future__ import annotations

import contextlib
import json
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from evaluation.ifeval_files import _drop, read_inputs, read_responses
from evaluation.nltk_punkt import ensure_punkt
from pipeline import schema

JOINS = ("prompt", "position", "prompt_then_position")

# The published GPT-4 figures (Zhou et al. 2023, Table 3: prompt-level strict 76.89%, instruction-level
# strict 83.57%, prompt-level loose 79.30%, instruction-level loose 85.37%) are one draw of the
# reference's unseeded random letters for the two prompts asking for the frequency of "#" and "!":
# in the strict pass one of the two passed, in the loose pass neither. This seed reproduces that draw
# (about one seed in twenty does); every other prompt scores the same whatever the seed.
PAPER_SEED = 51


@dataclass
class IFEvalConfig:
    join: str = field(
        default="prompt_then_position",
        metadata={
            "help": "How responses are matched to prompts: 'prompt' (exact prompt text, as the reference), "
            "'position' (line i answers prompt i), or 'prompt_then_position' (text first; a prompt left "
            "unmatched takes the response at its own position when that one is unmatched too)."
        },
    )
    seed: int | None = field(
        default=0,
        metadata={
            "help": "Seed of the random draws the reference checkers make for invalid arguments and of "
            "langdetect; None leaves both unseeded, as the reference runs."
        },
    )
    nltk_data_dir: str | None = field(
        default=None,
        metadata={
            "help": "NLTK data directory where the offline English Punkt model is written when NLTK has "
            "none; default: $XDG_CACHE_HOME (or ~/.cache)/characterflywheel/nltk_data."
        },
    )

    def __post_init__(self) -> None:
        if self.join not in JOINS:
            raise ValueError(f"join={self.join!r} is not known: set it to one of {JOINS}")
        if self.seed is not None and (not isinstance(self.seed, int) or self.seed < 0):
            raise ValueError(f"seed={self.seed!r} must be a non-negative integer or None")


@dataclass
class IFEvalResult:
    """`rows`: one row per scored prompt; `instructions`: one row per (prompt, instruction);
    `summary`: one row with the four accuracies; `by_instruction`: accuracy per instruction id and
    per category; `drops`: prompts not scored, following `schema.DROPS`."""

    rows: pl.DataFrame
    instructions: pl.DataFrame
    summary: pl.DataFrame
    by_instruction: pl.DataFrame
    drops: pl.DataFrame

    def accuracies(self) -> dict[str, float]:
        row = self.summary.row(0, named=True)
        return {k: float(v) for k, v in row.items() if k.endswith("_acc") and v is not None}


@contextlib.contextmanager
def _seeded(seed: int | None) -> Iterator[None]:
    from langdetect import DetectorFactory

    state, lang_seed = random.getstate(), DetectorFactory.seed
    if seed is not None:
        random.seed(seed)
        DetectorFactory.seed = seed
    try:
        yield
    finally:
        random.setstate(state)
        DetectorFactory.seed = lang_seed


def _kwargs_list(value: Any, n: int) -> list[dict[str, Any]]:
    if value is None:
        return [{} for _ in range(n)]
    items = json.loads(value) if isinstance(value, str) else list(value)
    # Loaders that store kwargs as one struct for all instructions fill absent keys with None; the
    # checkers take only the keys the instruction has.
    return [{k: v for k, v in (item or {}).items() if v is not None} for item in items]


def _match(inputs: pl.DataFrame, responses: pl.DataFrame, join: str) -> tuple[list[str | None], list[str]]:
    """The response of each input row (None when unmatched) and how it was matched."""
    prompts = inputs["prompt"].to_list()
    resp_prompts = responses["prompt"].to_list()
    resp_texts = responses["response"].to_list()
    matched: list[str | None] = [None] * len(prompts)
    how = ["none"] * len(prompts)
    used: set[int] = set()
    if join in ("prompt", "prompt_then_position"):
        # The reference keys responses by prompt in a dict: the last response to a prompt wins.
        by_prompt = {p: i for i, p in enumerate(resp_prompts)}
        for i, p in enumerate(prompts):
            j = by_prompt.get(p)
            if j is not None:
                matched[i], how[i] = resp_texts[j], "prompt"
                used.add(j)
    if join in ("position", "prompt_then_position"):
        for i in range(min(len(prompts), len(resp_texts))):
            if matched[i] is None and (join == "position" or i not in used):
                matched[i], how[i] = resp_texts[i], "position"
    return matched, how


def _loose_variants(response: str) -> list[str]:
    lines = response.split("\n")
    remove_first = "\n".join(lines[1:]).strip()
    remove_last = "\n".join(lines[:-1]).strip()
    remove_both = "\n".join(lines[1:-1]).strip()
    return [
        response,
        response.replace("*", ""),
        remove_first,
        remove_last,
        remove_both,
        remove_first.replace("*", ""),
        remove_last.replace("*", ""),
        remove_both.replace("*", ""),
    ]


def _follows(registry: dict, prompt: str, ids: list[str], kwargs: list[dict], variants: list[str]) -> list[bool]:
    out = []
    for instruction_id, kw in zip(ids, kwargs):
        checker = registry[instruction_id](instruction_id)
        checker.build_description(**kw)
        args = checker.get_instruction_args()
        if args and "prompt" in args:
            checker.build_description(prompt=prompt)
        out.append(any(v.strip() and checker.check_following(v) for v in variants))
    return out


def score_ifeval(inputs: pl.DataFrame, responses: pl.DataFrame, config: IFEvalConfig | None = None) -> IFEvalResult:
    """Score `responses` (prompt, response) against IFEval `inputs` (key, prompt, instruction_id_list,
    kwargs). Prompts without a response, with an unknown instruction id or whose checker fails on
    them are dropped with a reason, never scored as failures and never crash the run."""
    config = config or IFEvalConfig()
    ensure_punkt(config.nltk_data_dir)
    from if_verifiable.ifeval.instructions_registry import INSTRUCTION_DICT

    matched, how = _match(inputs, responses, config.join)
    drops: list[dict[str, Any]] = []
    todo = []
    for i, row in enumerate(inputs.iter_rows(named=True)):
        key = str(row["key"])
        ids = list(row["instruction_id_list"] or [])
        unknown = [x for x in ids if x not in INSTRUCTION_DICT]
        if matched[i] is None:
            drops.append(_drop(key, "missing_response", "no response matched this prompt"))
        elif not ids:
            drops.append(_drop(key, "no_instructions", "instruction_id_list is empty"))
        elif unknown:
            drops.append(_drop(key, "unknown_instruction", f"not an IFEval instruction: {unknown}"))
        else:
            try:
                kwargs = _kwargs_list(row["kwargs"], len(ids))
                if len(kwargs) != len(ids):
                    raise ValueError(f"{len(kwargs)} kwargs for {len(ids)} instructions")
            except (ValueError, TypeError) as exc:
                drops.append(_drop(key, "bad_kwargs", str(exc)[:300]))
                continue
            todo.append((i, row, ids, kwargs))

    results: dict[int, dict[str, list[bool]]] = {i: {} for i, *_ in todo}
    failed: dict[int, str] = {}
    with _seeded(config.seed):
        # Reference order: every prompt's strict pass, then every prompt's loose pass.
        for mode in ("strict", "loose"):
            for i, row, ids, kwargs in todo:
                if i in failed:
                    continue
                response = matched[i]
                variants = [response] if mode == "strict" else _loose_variants(response)
                try:
                    results[i][mode] = _follows(INSTRUCTION_DICT, row["prompt"], ids, kwargs, variants)
                except Exception as exc:  # a checker crashing on one record must not end the run
                    failed[i] = f"{mode}: {type(exc).__name__}: {exc}"[:300]

    rows, inst_rows = [], []
    for i, row, ids, _ in todo:
        if i in failed:
            drops.append(_drop(str(row["key"]), "checker_error", failed[i]))
            continue
        strict, loose = results[i]["strict"], results[i]["loose"]
        rows.append(
            {
                "key": row["key"],
                "prompt": row["prompt"],
                "response": matched[i],
                "matched_by": how[i],
                "instruction_id_list": ids,
                "follow_strict": strict,
                "follow_loose": loose,
                "prompt_strict": all(strict),
                "prompt_loose": all(loose),
            }
        )
        inst_rows += [
            {"key": row["key"], "instruction_id": x, "category": x.split(":")[0], "strict": s, "loose": lo}
            for x, s, lo in zip(ids, strict, loose)
        ]
    row_schema = {
        "key": pl.Int64,
        "prompt": pl.Utf8,
        "response": pl.Utf8,
        "matched_by": pl.Utf8,
        "instruction_id_list": pl.List(pl.Utf8),
        "follow_strict": pl.List(pl.Boolean),
        "follow_loose": pl.List(pl.Boolean),
        "prompt_strict": pl.Boolean,
        "prompt_loose": pl.Boolean,
    }
    rows_df = pl.DataFrame(rows, schema=row_schema)
    inst_df = pl.DataFrame(
        inst_rows,
        schema={
            "key": pl.Int64,
            "instruction_id": pl.Utf8,
            "category": pl.Utf8,
            "strict": pl.Boolean,
            "loose": pl.Boolean,
        },
    )
    return IFEvalResult(rows_df, inst_df, summarize(rows_df, inst_df), breakdown(inst_df), schema.drops_frame(drops))


def summarize(rows: pl.DataFrame, instructions: pl.DataFrame) -> pl.DataFrame:
    """The four IFEval accuracies (fractions in [0, 1]) with their denominators."""
    return pl.DataFrame(
        {
            "n_prompts": [rows.height],
            "n_instructions": [instructions.height],
            "n_matched_by_position": [int((rows["matched_by"] == "position").sum())],
            "prompt_strict_acc": [rows["prompt_strict"].mean() if rows.height else None],
            "instruction_strict_acc": [instructions["strict"].mean() if instructions.height else None],
            "prompt_loose_acc": [rows["prompt_loose"].mean() if rows.height else None],
            "instruction_loose_acc": [instructions["loose"].mean() if instructions.height else None],
        },
        schema={
            "n_prompts": pl.Int64,
            "n_instructions": pl.Int64,
            "n_matched_by_position": pl.Int64,
            "prompt_strict_acc": pl.Float64,
            "instruction_strict_acc": pl.Float64,
            "prompt_loose_acc": pl.Float64,
            "instruction_loose_acc": pl.Float64,
        },
    )


def breakdown(instructions: pl.DataFrame) -> pl.DataFrame:
    """Instruction-level accuracy per category (`level='category'`) and per instruction id."""
    parts = []
    for level, col in (("category", "category"), ("instruction", "instruction_id")):
        parts.append(
            instructions.group_by(col)
            .agg(
                pl.len().alias("n"),
                pl.col("strict").mean().alias("strict_acc"),
                pl.col("loose").mean().alias("loose_acc"),
            )
            .rename({col: "name"})
            .with_columns(pl.lit(level).alias("level"))
            .select("level", "name", pl.col("n").cast(pl.Int64), "strict_acc", "loose_acc")
        )
    return pl.concat(parts).sort("level", "name")


def score_ifeval_files(
    input_path: str | Path, response_path: str | Path, config: IFEvalConfig | None = None
) -> IFEvalResult:
    """Read both files and score them; unreadable lines join the result's drops."""
    inputs, in_drops = read_inputs(input_path)
    responses, resp_drops = read_responses(response_path)
    result = score_ifeval(inputs, responses, config)
    result.drops = pl.concat([in_drops, resp_drops, result.drops])
    return result


def main(argv: list[str] | None = None) -> int:
    """`python -m evaluation.ifeval INPUTS RESPONSES`: score a response file as the reference script does and
    print the four accuracies, with the prompts left unscored and why."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m evaluation.ifeval", description=main.__doc__)
    parser.add_argument("inputs", help="IFEval prompts JSONL (optionally gzipped)")
    parser.add_argument("responses", help='{"prompt","response"} JSONL (optionally gzipped)')
    parser.add_argument("--join", default="prompt_then_position", choices=JOINS)
    parser.add_argument("--seed", type=int, default=0, help="seed of the checkers' draws for invalid arguments")
    parser.add_argument("--nltk_data_dir", default=None, help="where the offline Punkt model is written")
    args = parser.parse_args(argv)
    config = IFEvalConfig(join=args.join, seed=args.seed, nltk_data_dir=args.nltk_data_dir)
    result = score_ifeval_files(args.inputs, args.responses, config)
    not_scored = dict(result.drops.group_by("reason_code").len().iter_rows()) if result.drops.height else {}
    print(json.dumps({"accuracies": result.accuracies(), "not_scored": not_scored}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
