"""Greedy replies kept by the weights that wrote them, and read back only for exactly those weights and settings."""

import shutil

from evaluation.greedy_replies import keep_replies, read_replies, reply_key

CONTEXTS = [[{"role": "user", "content": "Say hi in lowercase."}], [{"role": "user", "content": "Name a colour."}]]
SETTINGS = {"backend": "hf", "device": "cpu", "max_new_tokens": 8, "greedy": True}


def test_the_key_names_the_weights_the_prompts_and_the_settings(tmp_path):
    from tests.training.tiny_policy import tiny_policy_dir

    policy = tiny_policy_dir()
    key = reply_key(policy, CONTEXTS, SETTINGS)
    assert key and key == reply_key(policy, CONTEXTS, dict(reversed(SETTINGS.items())))
    assert key != reply_key(policy, CONTEXTS[:1], SETTINGS)
    assert key != reply_key(policy, CONTEXTS, {**SETTINGS, "max_new_tokens": 9})
    # the same weights in another folder are the same weights; changed weights are not
    copy = tmp_path / "copy"
    shutil.copytree(policy, copy)
    assert reply_key(str(copy), CONTEXTS, SETTINGS) == key
    weights = next(p for p in copy.iterdir() if p.suffix == ".safetensors")
    weights.write_bytes(weights.read_bytes()[:-1] + b"\0")
    assert reply_key(str(copy), CONTEXTS, SETTINGS) != key
    # a hub name has no folder to digest: never kept
    assert reply_key("some-org/some-model", CONTEXTS, SETTINGS) is None


def test_kept_replies_read_back_only_whole(tmp_path):
    keep_replies(tmp_path, "k", ["hi", "blue"], [2, 1])
    assert read_replies(tmp_path, "k", 2) == (["hi", "blue"], [2, 1])
    assert read_replies(tmp_path, "k", 3) is None and read_replies(tmp_path, "other", 2) is None
    (tmp_path / "torn.parquet").write_bytes(b"PAR1 not a parquet file")
    assert read_replies(tmp_path, "torn", 2) is None
