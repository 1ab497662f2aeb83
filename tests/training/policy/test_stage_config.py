import json

import pytest

from training.policy.dpo import DPORunConfig
from training.policy.stage_config import parse_config


def test_parse_config_precedence_defaults_extras_file_flags(tmp_path):
    cfg_file = tmp_path / "c.json"
    cfg_file.write_text(json.dumps({"beta": 0.3, "max_steps": 7, "output_dir": "from-file"}))
    cfg = parse_config(
        DPORunConfig,
        ["--config", str(cfg_file), "--max_steps", "9", "--use_lora"],
        defaults={"beta": 0.2, "learning_rate": 0.5, "output_dir": "from-extras"},
    )
    assert isinstance(cfg, DPORunConfig)
    assert cfg.max_steps == 9 and cfg.use_lora is True  # flags win
    assert cfg.beta == 0.3 and cfg.output_dir == "from-file"  # the file beats extras
    assert cfg.learning_rate == 0.5  # extras beat defaults
    assert cfg.loss_type == "sigmoid"  # untouched default
    with pytest.raises(ValueError, match="unknown settings"):
        parse_config(DPORunConfig, [], defaults={"nope": 1})
    with pytest.raises(ValueError, match="beta"):
        parse_config(DPORunConfig, ["--beta", "-1"])
