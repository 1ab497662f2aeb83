"""Small days of real traffic as a `folder` source, for in-process runs of the daily assets."""

import json

DAY = "2026-01-05"
# a generation at toy sizes: every step runs, in seconds
TOY_GENERATION = {
    "pretrain_steps": 5,
    "candidate_prompts": 6,
    "samples_per_prompt": 2,
    "steer_samples": 2,
    "max_new_tokens": 8,
    "sft_steps": 2,
    "dpo_steps": 2,
    "grpo_steps": 1,
    "reward_train_rows": 2000,
    "pair_mining_rows": 2000,
    "eval_prompts": 3,
}


def write_traffic(folder, n_conversations=60, max_messages=8, day=DAY, offset=0):
    """Real conversations of the packaged Chit-Chat corpus, as one day of folder traffic."""
    from pipeline.source_chitchat import chitchat_path, load_json_corpus
    from pipeline.source_config import SourceConfig

    corpus = load_json_corpus(str(chitchat_path(SourceConfig())))
    rows = []
    picked = [c for c in corpus.values() if len(c["messages"]) >= 4][offset : offset + n_conversations]
    for c, conv in enumerate(picked):
        msgs = [m for turn in conv["messages"] for m in turn][:max_messages]
        first = msgs[0]["sender"]
        for i, m in enumerate(msgs):
            text = m["text"] + (" write to me at jane.doe@example.com" if c == 3 and i == 0 else "")
            rows.append(
                {
                    "conversation_id": f"conv-{c}",
                    "turn_index": i,
                    "text": text,
                    "role": "user" if m["sender"] == first else "assistant",
                    "user_id": f"user-{c % 15}",
                    "ts": f"{day}T{8 + c % 10:02d}:{i:02d}:00Z",
                    "source": "internal" if c % 15 < 4 else "external",
                }
            )
    (folder / f"{day}.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
