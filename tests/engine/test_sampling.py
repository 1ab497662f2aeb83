import polars as pl
import pytest
from transformers import AutoTokenizer

from engine.policy import PolicyConfig
from engine.sampling import CandidateConfig, fit_prompt, sample_replies, valid_prompts
from pipeline import schema
from tests.training.tiny_policy import one_cpu_thread, prompts_frame, tiny_policy_dir  # noqa: F401


def _bad_prompts() -> pl.DataFrame:
    base = prompts_frame(2)
    return pl.concat(
        [
            base.head(1).with_columns(prompt_id=pl.lit("empty"), history=pl.lit([], dtype=pl.List(schema.MESSAGE))),
            base.head(1).with_columns(
                prompt_id=pl.lit("ends_with_bot"),
                history=pl.lit(
                    [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}],
                    dtype=pl.List(schema.MESSAGE),
                ),
            ),
        ]
    )


def test_fit_prompt_cuts_oldest_turns_but_keeps_system_card():
    tok = AutoTokenizer.from_pretrained(tiny_policy_dir())
    messages = [{"role": "system", "content": "You are Robin."}]
    for i in range(30):
        messages += [
            {"role": "user", "content": f"tell me about pizza number {i}"},
            {"role": "assistant", "content": "pizza is great " * 3},
        ]
    messages.append({"role": "user", "content": "last question"})
    ids = fit_prompt(tok, messages, 96)
    text = tok.decode(ids)
    assert len(ids) <= 96
    assert text.startswith("<|im_start|>system\nYou are Robin.") and "last question" in text
    assert "pizza number 0" not in text and text.endswith("<|im_start|>assistant\n")


def test_valid_prompts_and_config_validation():
    kept, drops = valid_prompts(pl.concat([prompts_frame(2), _bad_prompts()]), "candidates")
    assert kept["prompt_id"].to_list() == ["p0", "p1"] and drops.height == 2
    assert set(drops["stage"]) == {"candidates"}
    with pytest.raises(ValueError, match="temperature"):
        CandidateConfig(temperature=0)
    with pytest.raises(ValueError, match="num_samples"):
        CandidateConfig(num_samples=0)


def test_a_segment_is_sampled_as_if_alone():
    # the fixed suite's replies do not depend on how many window prompts were sampled before it
    suite = [[{"role": "user", "content": f"tell me about {t}"}] for t in ("cats", "rain", "chess")]
    window = [[{"role": "user", "content": f"hi number {i}"}] for i in range(5)]
    policy = PolicyConfig(model_name_or_path=tiny_policy_dir())
    cfg = CandidateConfig(num_samples=1, max_new_tokens=8, batch_size=2, device="cpu", seed=3)
    alone, _, _ = sample_replies(policy, suite, cfg)
    after_five, _, _ = sample_replies(policy, window + suite, cfg, segments=[5, 3])
    after_three, _, _ = sample_replies(policy, window[:3] + suite, cfg, segments=[3, 3, 0])
    assert after_five[5:] == alone and after_three[3:] == alone
    # without segments, the suite's draws follow the ones before it
    unsegmented, _, _ = sample_replies(policy, window + suite, cfg)
    assert unsegmented[:4] == after_five[:4] and unsegmented[5:] != alone
    with pytest.raises(ValueError, match="sum to the 8 prompts"):
        sample_replies(policy, window + suite, cfg, segments=[5, 2])
