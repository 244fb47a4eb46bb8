from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

import lmforge.cli.export  # noqa: F401  (registers `lmforge export` on the app)
from lmforge.config import LoraConfig, ModelConfig
from lmforge.models import apply_lora, build_model, load_pretrained, save_adapter


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(base model dir, LoRA adapter dir) of a tiny GPT-2 with a word-level tokenizer."""
    root = tmp_path_factory.mktemp("export")
    specials = ["<pad>", "</s>", "<unk>", "<s>"]
    vocab = {t: i for i, t in enumerate(specials + "the cat sat on a mat".split())}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
        bos_token="<s>",
    )
    base_dir = root / "base"
    build_model(ModelConfig(family="gpt2"), tokenizer, "causal_lm").save_pretrained(base_dir)
    tokenizer.save_pretrained(base_dir)
    model = apply_lora(load_pretrained(base_dir)[0], LoraConfig(r=2))
    with torch.no_grad():  # non-zero B so that merging changes the weights
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5, generator=torch.Generator().manual_seed(0))
    return base_dir, save_adapter(model, root / "adapter", tokenizer=tokenizer)


def test_export_merge_writes_a_plain_model(cli, model_dirs, tmp_path) -> None:
    base_dir, adapter_dir = model_dirs
    result = cli("export", adapter_dir, "--merge", "--out", tmp_path / "merged")
    assert result.code == 0, result.err
    assert "wrote merged model to" in result.out
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged", local_files_only=True)
    base = AutoModelForCausalLM.from_pretrained(base_dir, local_files_only=True)
    assert not torch.equal(
        merged.transformer.h[0].attn.c_attn.weight, base.transformer.h[0].attn.c_attn.weight
    )
    assert (tmp_path / "merged" / "tokenizer.json").is_file()


def test_existing_out_needs_overwrite(cli, model_dirs, tmp_path) -> None:
    _, adapter_dir = model_dirs
    (tmp_path / "out").mkdir()
    result = cli("export", adapter_dir, "--merge", "--out", tmp_path / "out")
    assert result.code == 2
    assert (
        result.err.strip()
        == f"lmforge: error: {tmp_path / 'out'} already exists; pass --overwrite to replace it"
    )
    result = cli("export", adapter_dir, "--merge", "--out", tmp_path / "out", "--overwrite")
    assert result.code == 0, result.err
    assert (tmp_path / "out" / "model.safetensors").is_file()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["{tmp}/missing", "--merge", "--out", "{tmp}/o"],
            "model directory {tmp}/missing does not exist",
        ),
        (["{adapter}", "--merge"], "--merge needs --out DIR"),
        (["{adapter}"], "is a LoRA adapter; pass --merge --out DIR"),
        (
            ["{base}", "--out", "{tmp}/o"],
            "nothing to export: {base} is not a LoRA adapter directory",
        ),
        (["{base}", "--merge", "--out", "{tmp}/o"], "{base} has no adapter_config.json"),
    ],
)
def test_export_mistakes_exit_2_with_one_line(cli, model_dirs, tmp_path, args, message) -> None:
    base_dir, adapter_dir = model_dirs
    fill = {"tmp": tmp_path, "base": base_dir, "adapter": adapter_dir}
    result = cli("export", *[a.format(**fill) for a in args])
    assert result.code == 2
    assert result.err.startswith("lmforge: error: ") and result.err.count("\n") == 1
    assert message.format(**fill) in result.err
    assert not (tmp_path / "o").exists()
