import pytest
import torch

from engine.policy import PolicyConfig, load_model, load_tokenizer
from tests.training.tiny_policy import one_cpu_thread, tiny_policy_dir  # noqa: F401


def test_load_policy_via_config_and_lora_config():
    cfg = PolicyConfig(model_name_or_path=tiny_policy_dir(), device="cpu", dtype="float32")
    tok = load_tokenizer(cfg, padding_side="left")
    model = load_model(cfg)
    assert tok.padding_side == "left" and model.dtype == torch.float32
    assert cfg.peft_config() is None
    lora = PolicyConfig(use_lora=True, lora_r=4, lora_target_modules="q_proj, v_proj").peft_config()
    assert lora.r == 4 and set(lora.target_modules) == {"q_proj", "v_proj"}


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"dtype": "int3"}, "dtype"),
        ({"device": "tpu"}, "device"),
        ({"lora_r": 0}, "lora_r"),
        ({"gguf_file": "x.gguf"}, "model_name_or_path"),
    ],
)
def test_policy_config_rejects_bad_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PolicyConfig(**kwargs)
