"""`[run] report_to = ["tensorboard"]`: every metrics record also lands in a TensorBoard event
file under `<run dir>/tensorboard/<stage>`; unknown tracker names are refused at validation."""

from __future__ import annotations

import pytest

from rlhfx.files import read_jsonl

RECIPE = """\
[run]
output_dir = "out"
seed = 5
report_to = ["tensorboard"]

[stages.m]
name = "make"
count = 4

[stages.n]
name = "noop"
"""


@pytest.fixture
def workdir(tmp_path, monkeypatch, teststages):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def scalars(log_dir) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_metrics_go_to_tensorboard(rlhfx_cli, workdir):
    pytest.importorskip("tensorboard")
    (workdir / "r.toml").write_text(RECIPE, encoding="utf-8")
    result = rlhfx_cli("run", "r.toml")
    assert result.exit_code == 0, result.output
    out = workdir / "out"
    # metrics.jsonl is still written, and TensorBoard has the same numbers at the same steps.
    assert [r["rows"] for r in read_jsonl(out / "stages/m/metrics.jsonl")] == [4, 4]
    events = list((out / "tensorboard/m").glob("events.out.tfevents.*"))
    assert events, list(out.rglob("*"))
    found = scalars(out / "tensorboard/m")
    assert found == {"rows": [(0, 4.0), (1, 4.0)], "done": [(1, 1.0)]}
    # A stage that logs nothing opens no writer.
    assert not (out / "tensorboard/n").exists()


def test_no_tensorboard_unless_asked(rlhfx_cli, workdir):
    (workdir / "r.toml").write_text(RECIPE.replace('report_to = ["tensorboard"]\n', ""))
    result = rlhfx_cli("run", "r.toml")
    assert result.exit_code == 0, result.output
    assert not (workdir / "out/tensorboard").exists()


def test_unknown_tracker_is_a_recipe_error(rlhfx_cli, workdir):
    (workdir / "r.toml").write_text(RECIPE.replace('["tensorboard"]', '["tensorbored"]'))
    result = rlhfx_cli("validate", "r.toml")
    assert result.exit_code == 2
    assert "r.toml: run.report_to" in result.stderr
    assert "unknown tracker 'tensorbored'" in result.stderr and "wandb" in result.stderr


def test_tracker_names_match_transformers():
    """Our list (kept so validation never imports transformers) is transformers' list."""
    integrations = pytest.importorskip("transformers.integrations.integration_utils")
    from rlhfx.recipe import REPORT_TARGETS

    assert set(integrations.INTEGRATION_TO_CALLBACK) == REPORT_TARGETS


def test_tensorboard_missing_is_a_clear_error(monkeypatch):
    import importlib.util

    from pydantic import ValidationError

    from rlhfx.recipe import RunSection

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "tensorboard" else real(name, *a))
    with pytest.raises(ValidationError, match=r"rlhfx\[tensorboard\]"):
        RunSection(report_to=["tensorboard"])
    assert RunSection(report_to=["comet_ml", "comet_ml"]).report_to == ["comet_ml"]
