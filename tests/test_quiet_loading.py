"""`rlhfx chat` and `rlhfx eval` load models without transformers' progress bars between
their own output; on a terminal a spinner of ours says what is loading."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console

TINY = "builtin:tiny-gpt-neo"


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory) -> Path:
    """The tiny model as a folder: loading it goes through from_pretrained and its bar."""
    from rlhfx.models import load_causal_lm, load_tokenizer

    out = tmp_path_factory.mktemp("tiny")
    load_causal_lm(TINY).save_pretrained(out)
    load_tokenizer(TINY).save_pretrained(out)
    return out


@pytest.fixture(autouse=True)
def bars_back_on():
    """The commands switch the libraries' bars off for the process; other tests get them back."""
    from transformers.utils import logging as hf_logging

    hf_logging.enable_progress_bar()
    yield
    hf_logging.enable_progress_bar()


def test_the_library_bar_shows_without_us(saved_model, capsys):
    """What the commands hide: loading a folder draws "Loading weights" on stderr."""
    from rlhfx.models import load_causal_lm

    load_causal_lm(str(saved_model))
    assert "Loading weights" in capsys.readouterr().err


def test_chat_prints_no_loading_bars(rlhfx_cli, saved_model):
    result = rlhfx_cli("chat", str(saved_model), "-p", "hello", "--max-new-tokens", "3",
                       "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert "Loading weights" not in result.stderr and "it/s" not in result.stderr


def test_eval_prints_no_loading_bars(rlhfx_cli, saved_model, tmp_path):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "hello"}\n{"prompt": "bye"}\n')
    result = rlhfx_cli("eval", str(saved_model), "-p", str(prompts),
                       "--judge", "length", "--max-new-tokens", "3", "--device", "cpu",
                       "-o", str(tmp_path / "ev"))
    assert result.exit_code == 0, result.output
    assert "Loading weights" not in result.stderr and "it/s" not in result.stderr
    assert (tmp_path / "ev/eval.json").exists()


def test_our_spinner_names_what_loads_on_a_terminal_only(saved_model, capsys):
    from rlhfx.loading import loading
    from rlhfx.models import load_causal_lm

    screen = io.StringIO()
    with loading("the policy", Console(file=screen, force_terminal=True, width=80)):
        load_causal_lm(str(saved_model))
    assert "loading the policy" in screen.getvalue()
    assert "Loading weights" not in capsys.readouterr().err
    piped = io.StringIO()
    with loading("the policy", Console(file=piped, force_terminal=False)):
        pass
    assert piped.getvalue() == ""
