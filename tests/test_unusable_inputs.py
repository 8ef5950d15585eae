"""Inputs that used to end in a traceback: a `--tokenizer` that is not a tokenizer, and an
output directory that cannot be made for another reason than permissions. Each is one
`error:` line, exit status 2, and nothing is written."""

from __future__ import annotations

from pathlib import Path

import pytest

ANTHROPIC = Path(__file__).parent / "fixtures" / "hh_anthropic_small.jsonl"

VIRTUAL = Path("/proc")
needs_proc = pytest.mark.skipif(not (VIRTUAL / "self").is_dir(), reason="no /proc here")


def one_error(result) -> str:
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert len(lines) == 1, result.output
    return lines[0]


@pytest.mark.parametrize("files", [
    {"notes.txt": "hello"},                                     # no tokenizer files at all
    {"config.json": '{"model_type": "gpt2"}'},                  # a model's config, no vocab
    {"tokenizer.json": "garbage", "tokenizer_config.json": "{}"},  # named like one, broken
])
def test_data_prepare_with_a_folder_that_is_not_a_tokenizer(rlhfx_cli, tmp_path, files):
    folder = tmp_path / "tok"
    folder.mkdir()
    for name, text in files.items():
        (folder / name).write_text(text)
    out = tmp_path / "out"
    result = rlhfx_cli("data", "prepare", str(ANTHROPIC), "--skip-bad-rows",
                       "--tokenizer", str(folder), "--out", str(out))
    line = one_error(result)
    assert str(folder) in line and "tokenizer" in line
    assert not out.exists()


@needs_proc
def test_data_prepare_into_a_virtual_filesystem(rlhfx_cli, tmp_path):
    result = rlhfx_cli("data", "prepare", str(ANTHROPIC), "--skip-bad-rows",
                       "--out", "/proc/rlhfx-data")
    assert one_error(result) == (
        "error: data prepare: --out: cannot create /proc/rlhfx-data: /proc takes no new "
        "directory (No such file or directory; a read-only or virtual filesystem?)"
    )
    assert not Path("/proc/rlhfx-data").exists()


def test_data_prepare_below_a_file(rlhfx_cli, tmp_path):
    (tmp_path / "file").write_text("keep me\n")
    result = rlhfx_cli("data", "prepare", str(ANTHROPIC), "--out", str(tmp_path / "file/out"))
    assert "is a file, not a directory" in one_error(result)
    assert (tmp_path / "file").read_text() == "keep me\n"


@needs_proc
@pytest.mark.parametrize("where", ["recipe", "--set", "--output-dir"])
def test_run_into_a_virtual_filesystem(rlhfx_cli, tmp_path, monkeypatch, teststages, where):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    target = "/proc/rlhfx-run/out"
    run_table = f'[run]\noutput_dir = "{target}"\n' if where == "recipe" else ""
    Path("r.toml").write_text(run_table + '[stages.m]\nname = "make"\ncount = 1\n')
    args = {"recipe": [], "--set": ["--set", f"run.output_dir={target}"],
            "--output-dir": ["--output-dir", target]}[where]
    line = one_error(rlhfx_cli("run", "r.toml", *args))
    assert f"cannot create {target}: /proc takes no new directory" in line
    assert ("r.toml: run.output_dir" in line) == (where != "--output-dir")
    assert sorted(p.name for p in work.iterdir()) == ["r.toml"]


@needs_proc
def test_an_existing_directory_that_takes_no_files(rlhfx_cli, tmp_path, monkeypatch, teststages):
    monkeypatch.chdir(tmp_path)
    Path("r.toml").write_text('[stages.m]\nname = "make"\ncount = 1\n')
    line = one_error(rlhfx_cli("validate", "r.toml", "--set", "run.output_dir=/proc/self"))
    assert line.startswith("error: r.toml: run.output_dir: /proc/self: ")


def test_the_output_folder_check_probes_under_a_name_of_its_own(tmp_path, monkeypatch):
    """Every process of a torchrun run checks the same missing output folder at once: the
    check must not make that folder itself (another process's probe would then find it and
    call the filesystem read-only), and it leaves nothing behind."""
    from rlhfx.recipe import output_dir_problem

    made: list[Path] = []
    real_mkdir = Path.mkdir

    def mkdir(self, *args, **kwargs):
        made.append(self)
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", mkdir)
    target = tmp_path / "runs" / "new"
    assert output_dir_problem(str(target)) is None
    assert made and all(p.parent == tmp_path and p.name.startswith(".rlhfx-") for p in made)
    (tmp_path / "runs").mkdir()  # another process got there first: still usable
    assert output_dir_problem(str(target)) is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs"]
