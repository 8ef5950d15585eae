"""Tests a plugin author writes, with the fixtures rlhfx installs for pytest."""

from __future__ import annotations

import pytest


def test_registered_through_the_entry_point(rlhfx_plugins):
    system = rlhfx_plugins()  # the installed plugins, this one among them
    entry = system.get("reward_source", "keywords")
    assert entry.plugin.distribution == "rlhfx-myreward"
    assert entry.plugin.status == "loaded"


def test_scores(rlhfx_plugins):
    entry = rlhfx_plugins().get("reward_source", "keywords")
    source = entry.cls(entry.cls.Config(keywords=["please", "thank you"], bonus=0.5))
    assert source.score(["p"] * 3, ["Please, thank you, please", "pleased", "THANK YOU"]) == [
        1.0, 0.0, 0.5,
    ]


def test_config_rejects_unknown_and_blank(rlhfx_plugins):
    from pydantic import ValidationError

    config = rlhfx_plugins().get("reward_source", "keywords").cls.Config
    with pytest.raises(ValidationError):
        config(keywords=["ok"], bonsu=1)
    with pytest.raises(ValidationError):
        config(keywords=[" "])


def test_cli_lists_it(rlhfx_cli):
    result = rlhfx_cli("plugins", "list", "--json")
    assert result.exit_code == 0
    assert '"reward_source:keywords"' in result.stdout
