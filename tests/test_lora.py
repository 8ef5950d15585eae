"""One LoRA option table for every trainer: its peft config carries exactly what a recipe says."""

import pytest
from pydantic import ValidationError

from rlhfx.lora import LoraSettings


def test_peft_config_carries_the_recipe_values():
    config = LoraSettings(r=4, alpha=8, dropout=0.0, target_modules=["q_proj"]).peft_config(
        "SEQ_CLS"
    )
    assert (config.r, config.lora_alpha, config.lora_dropout) == (4, 8, 0.0)
    assert set(config.target_modules) == {"q_proj"}
    assert str(config.task_type).endswith("SEQ_CLS")


def test_defaults_are_the_seed_reward_model_lora_and_bad_values_are_refused():
    assert LoraSettings().model_dump() == {
        "r": 16,
        "alpha": 32,
        "dropout": 0.1,
        "target_modules": None,
    }
    with pytest.raises(ValidationError):
        LoraSettings(r=0)
    with pytest.raises(ValidationError):
        LoraSettings(rank=8)  # unknown key
