"""A disk that cannot take a write stops the run in one line naming the path and the free space;
the previous checkpoint stays intact, the partial one goes, and the same command resumes
exactly once there is space (a real 3 MiB tmpfs when this machine lets us mount one)."""

from __future__ import annotations

import errno
import json
import shutil
import subprocess
import uuid

import pytest
import torch

from rlhfx.alignment import state_files
from rlhfx.alignment.checkpoints import Checkpoints, LoopState
from rlhfx.testing import LENGTH, final_weights, same_weights
from rlhfx.testing import run_in_process as run
from rlhfx.testing import run_records as records
from rlhfx.testing import write_algorithm_recipe as write_recipe
from rlhfx.write_faults import write_failure


@pytest.mark.parametrize("exc", [
    OSError(errno.ENOSPC, "No space left on device", "/data/run/x"),
    OSError(errno.EDQUOT, "Disk quota exceeded"),
    OSError(errno.EROFS, "Read-only file system"),
    OSError(errno.EIO, "Input/output error"),
    Exception("Error while serializing: I/O error: No space left on device (os error 28)"),
    RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 662"),
])
def test_disk_faults_are_recognised_in_each_librarys_words(exc, tmp_path):
    error = write_failure(exc, tmp_path)
    assert error is not None and "\n" not in str(error)
    assert " free" in str(error) and "run the same command again" in str(error)
    where = "/data/run/x" if getattr(exc, "filename", None) else str(tmp_path)
    assert str(error).startswith(f"{where}: could not write")


def test_other_faults_are_not_disk_faults(tmp_path):
    assert write_failure(ValueError("bad value"), tmp_path) is None
    assert write_failure(OSError(errno.ENOENT, "missing"), tmp_path) is None


def test_an_injected_full_disk_keeps_the_previous_checkpoint_and_leaves_no_partial(
    tmp_path, monkeypatch
):
    ckpts = Checkpoints(tmp_path / "checkpoints")
    ckpts.save(LoopState(iteration=1), {"policy": {"w": torch.ones(2)}})
    real = state_files.save_state

    def full(state, weights, tree):
        real(state, weights, tree)
        raise OSError(errno.ENOSPC, "No space left on device", str(tree))

    monkeypatch.setattr(state_files, "save_state", full)
    with pytest.raises(OSError) as raised:
        ckpts.save(LoopState(iteration=2), {"policy": {"w": torch.zeros(2)}})
    assert "could not write (no space left" in str(write_failure(raised.value, tmp_path))
    assert sorted(p.name for p in ckpts.root.iterdir()) == ["iter-0001", "latest.json"]
    assert json.loads((ckpts.root / "latest.json").read_text())["dir"] == "iter-0001"
    state = ckpts.load_algorithm_state(ckpts.root / "iter-0001")
    assert torch.equal(state["policy"]["w"], torch.ones(2))


@pytest.fixture
def small_disk(tmp_path):
    """A 3 MiB tmpfs (one tiny checkpoint fits, a second beside it does not)."""
    folder = tmp_path / f"disk-{uuid.uuid4().hex[:6]}"
    folder.mkdir()
    mount = shutil.which("mount")
    if mount is None:
        pytest.skip("no mount command (the injected-ENOSPC test covers the logic)")
    made = subprocess.run([mount, "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(folder)],
                          capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({made.stderr.strip()[:80]}); the "
                    "injected-ENOSPC test covers the logic")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


@pytest.mark.slow
def test_a_real_full_disk_stops_in_one_line_and_the_same_command_resumes_exactly(
    rlhfx_cli, tmp_path, small_disk
):
    options = {"iterations": 3, "batch_size": 2, "k": 2, "min_new_tokens": 4,
               "max_new_tokens": 4, "learning_rate": 3e-3, "torch_threads": 1}
    recipe = write_recipe(tmp_path, "grpo", options, reward=LENGTH)
    out = small_disk / "run"
    result = rlhfx_cli("run", str(recipe), "-o", str(out))
    assert result.exit_code == 2
    text = " ".join(result.output.split())
    assert "could not write (no space left on the device;" in text and " free)" in text
    assert str(out / "stages" / "align") in text and "Traceback" not in result.output
    root = out / "stages" / "align" / "checkpoints"
    assert sorted(p.name for p in root.iterdir()) == ["iter-0001", "latest.json"]  # no partial
    Checkpoints(root).load(root / "iter-0001")  # intact

    subprocess.run(["mount", "-o", "remount,size=32m", str(small_disk)], check=True)
    run(rlhfx_cli, recipe, out)  # the same command, now with space
    reference = run(rlhfx_cli, recipe, tmp_path / "reference")
    got, want = records(out), records(reference)
    assert [r["step"] for r in got] == [1, 2, 3]
    for a, b in zip(got, want, strict=True):
        assert a["reward_mean"] == pytest.approx(b["reward_mean"], rel=1e-6)
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5, abs=1e-7)
    assert same_weights(final_weights(out), final_weights(reference))
