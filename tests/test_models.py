from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSeq2SeqLM,
    PreTrainedTokenizerFast,
)

from lmforge.config import LoraConfig, ModelConfig
from lmforge.errors import UserError
from lmforge.models import (
    apply_lora,
    build_model,
    count_parameters,
    load_pretrained,
    merge_and_export,
    model_kind,
    save_adapter,
)

SPECIALS = ["<pad>", "</s>", "<unk>", "<s>", "<cls>", "<sep>", "<mask>"]
SENTINELS = [f"<extra_id_{i}>" for i in range(4)]
WORDS = "the a cat dog sat on mat ran fast slow".split()
INPUT = torch.tensor([[11, 12, 13, 14, 15, 1]])

FAMILY_OBJECTIVE = {
    "t5": "span_corruption",
    "bert": "mlm_nsp",
    "gpt2": "causal_lm",
    "llama": "causal_lm",
}


def make_tokenizer(specials: list[str] = SPECIALS) -> PreTrainedTokenizerFast:
    """A tiny word-level tokenizer with every special token lmforge models use."""
    vocab = {token: i for i, token in enumerate(specials + SENTINELS + WORDS)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    names = ["pad", "eos", "unk", "bos", "cls", "sep", "mask"]
    named = {f"{n}_token": t for n, t in zip(names, SPECIALS, strict=True) if t in specials}
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, extra_special_tokens=SENTINELS, **named
    )


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerFast:
    return make_tokenizer()


def forward(model: torch.nn.Module, ids: torch.Tensor = INPUT) -> torch.Tensor:
    """Logits of one fixed batch (decoder fed the same ids for seq2seq models)."""
    extra = {"decoder_input_ids": ids} if model_kind(model) == "seq2seq" else {}
    with torch.no_grad():
        output = model(input_ids=ids, **extra)
    return output.logits if hasattr(output, "logits") else output.prediction_logits


def save(model, tokenizer, path: Path) -> Path:
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


# --------------------------------------------------------------------------- from scratch


@pytest.mark.parametrize("family", ["t5", "bert", "gpt2", "llama"])
def test_build_uses_tokenizer_vocab_and_special_ids(family: str, tokenizer) -> None:
    model = build_model(ModelConfig(family=family), tokenizer, FAMILY_OBJECTIVE[family])
    config = model.config
    assert config.vocab_size == len(tokenizer) == 21
    assert config.pad_token_id == tokenizer.pad_token_id == 0
    assert config.hidden_size == 64 and config.num_hidden_layers == 2
    if family != "bert":
        assert config.eos_token_id == tokenizer.eos_token_id == 1
    if family == "t5":
        assert config.decoder_start_token_id == tokenizer.pad_token_id
        assert config.feed_forward_proj == "gated-gelu"
    if family in ("gpt2", "llama"):
        assert config.bos_token_id == tokenizer.bos_token_id == 3
    model.eval()
    assert forward(model).shape == (1, INPUT.shape[1], len(tokenizer))


def test_bert_heads_follow_the_objective(tokenizer) -> None:
    pretraining = build_model(ModelConfig(family="bert"), tokenizer, "mlm_nsp").eval()
    masked = build_model(ModelConfig(family="bert"), tokenizer, "mlm")
    assert type(pretraining).__name__ == "BertForPreTraining"
    assert type(masked).__name__ == "BertForMaskedLM"
    with torch.no_grad():
        out = pretraining(input_ids=INPUT, next_sentence_label=torch.tensor([1]))
    assert out.seq_relationship_logits.shape == (1, 2)


def test_build_is_deterministic_per_seed_and_leaves_global_rng(tokenizer) -> None:
    cfg = ModelConfig(family="gpt2")
    torch.manual_seed(0)
    expected_next = torch.rand(1)
    torch.manual_seed(0)
    first = build_model(cfg, tokenizer, "causal_lm", seed=7).state_dict()
    assert torch.equal(torch.rand(1), expected_next)
    second = build_model(cfg, tokenizer, "causal_lm", seed=7).state_dict()
    other = build_model(cfg, tokenizer, "causal_lm", seed=8).state_dict()
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert not torch.equal(first["transformer.wte.weight"], other["transformer.wte.weight"])


@pytest.mark.parametrize(
    ("objective", "family", "message"),
    [
        (
            "span_corruption",
            "gpt2",
            "objective span_corruption needs an encoder-decoder model (family t5); got family gpt2",
        ),
        ("mlm_nsp", "t5", "objective mlm_nsp needs an encoder model (family bert); got family t5"),
        (
            "causal_lm",
            "bert",
            "objective causal_lm needs a decoder-only model (family gpt2 or llama); got family bert",
        ),
        ("seq2seq_sft", "llama", "needs an encoder-decoder model (family t5); got family llama"),
    ],
)
def test_objective_must_fit_family(objective, family, message, tokenizer) -> None:
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        build_model(ModelConfig(family=family), tokenizer, objective)


def test_unknown_objective_lists_valid_ones(tokenizer) -> None:
    with pytest.raises(UserError, match="unknown objective 'denoise'; valid: span_corruption"):
        build_model(ModelConfig(family="t5"), tokenizer, "denoise")


def test_overrides_and_dropout_reach_the_hf_config(tokenizer) -> None:
    cfg = ModelConfig(family="t5", overrides={"num_decoder_layers": 1, "d_ff": 96}, dropout=0.0)
    model = build_model(cfg, tokenizer, "span_corruption")
    assert model.config.num_decoder_layers == 1 and len(model.decoder.block) == 1
    assert model.config.d_ff == 96 and model.config.dropout_rate == 0.0


def test_bad_overrides_are_user_errors(tokenizer) -> None:
    with pytest.raises(UserError, match=r"model.overrides.num_layer: .*did you mean 'num_layers'"):
        build_model(
            ModelConfig(family="t5", overrides={"num_layer": 3}), tokenizer, "span_corruption"
        )
    with pytest.raises(UserError, match="model.overrides for family t5: .*'d_model' expected int"):
        build_model(
            ModelConfig(family="t5", overrides={"d_model": "big"}), tokenizer, "span_corruption"
        )
    with pytest.raises(
        UserError, match="model.overrides for family gpt2: .*divisible by num_heads"
    ):
        build_model(ModelConfig(family="gpt2", overrides={"n_embd": 65}), tokenizer, "causal_lm")
    with pytest.raises(UserError, match="model.overrides.vocab_size: set from the tokenizer"):
        build_model(ModelConfig(family="gpt2", overrides={"vocab_size": 9}), tokenizer, "causal_lm")


def test_missing_special_token_is_named(tokenizer) -> None:
    no_mask = make_tokenizer([t for t in SPECIALS if t != "<mask>"])
    with pytest.raises(UserError, match="the tokenizer has no mask_token; family bert needs"):
        build_model(ModelConfig(family="bert"), no_mask, "mlm_nsp")


@pytest.mark.parametrize(("preset", "low", "high"), [("small", 2e6, 20e6), ("base", 70e6, 200e6)])
@pytest.mark.parametrize("family", ["t5", "bert", "gpt2", "llama"])
def test_preset_sizes(family, preset, low, high, tokenizer) -> None:
    with torch.device("meta"):  # shapes only: no memory, no init time
        model = build_model(
            ModelConfig(family=family, preset=preset), tokenizer, FAMILY_OBJECTIVE[family]
        )
    assert low < count_parameters(model) < high


def test_model_kind_and_trainable_count(tokenizer) -> None:
    kinds = {
        f: model_kind(build_model(ModelConfig(family=f), tokenizer, o))
        for f, o in FAMILY_OBJECTIVE.items()
    }
    assert kinds == {"t5": "seq2seq", "bert": "encoder", "gpt2": "causal", "llama": "causal"}
    model = build_model(ModelConfig(family="gpt2"), tokenizer, "causal_lm")
    total = count_parameters(model)
    assert total == sum(p.numel() for p in model.parameters())
    lora = apply_lora(model, LoraConfig(r=4))
    # c_attn is Conv1D(64 -> 192): A is 4x64, B is 192x4, in each of 2 layers
    assert count_parameters(lora, trainable_only=True) == 2 * (4 * 64 + 192 * 4)
    assert model_kind(lora) == "causal"


# --------------------------------------------------------------------------- pretrained


@pytest.mark.parametrize("family", ["t5", "bert", "gpt2", "llama"])
def test_save_then_load_pretrained_gives_identical_logits(family, tokenizer, tmp_path) -> None:
    model = build_model(ModelConfig(family=family), tokenizer, FAMILY_OBJECTIVE[family]).eval()
    path = save(model, tokenizer, tmp_path / family)
    loaded, loaded_tokenizer = load_pretrained(path, objective=FAMILY_OBJECTIVE[family])
    assert type(loaded) is type(model)
    assert torch.equal(forward(loaded), forward(model))
    assert loaded_tokenizer("the cat sat").input_ids == tokenizer("the cat sat").input_ids
    assert loaded_tokenizer.pad_token_id == 0 and loaded_tokenizer.mask_token_id == 6


@pytest.mark.parametrize(
    ("family", "fields"),
    [
        ("t5", ["dropout_rate"]),
        ("bert", ["hidden_dropout_prob", "attention_probs_dropout_prob"]),
        ("gpt2", ["resid_pdrop", "embd_pdrop", "attn_pdrop"]),
    ],
)
def test_dropout_replaces_a_checkpoints_rates(family, fields, tokenizer, tmp_path) -> None:
    model = build_model(
        ModelConfig(family=family, dropout=0.1), tokenizer, FAMILY_OBJECTIVE[family]
    )
    path = save(model, tokenizer, tmp_path / family)
    kept, _ = load_pretrained(path)
    assert {m.p for m in kept.modules() if isinstance(m, torch.nn.Dropout)} == {0.1}
    loaded, _ = load_pretrained(path, dropout=0.0)
    assert [getattr(loaded.config, name) for name in fields] == [0.0] * len(fields)
    assert {m.p for m in loaded.modules() if isinstance(m, torch.nn.Dropout)} == {0.0}
    assert torch.equal(forward(loaded.eval()), forward(model.eval()))  # the same weights


def test_dropout_of_another_architecture_and_of_one_without_any(tokenizer, tmp_path) -> None:
    from transformers import GPTNeoConfig, GPTNeoForCausalLM, MambaConfig, MambaForCausalLM

    small = dict(vocab_size=len(tokenizer), hidden_size=16, num_layers=1, num_heads=2)
    neo = GPTNeoForCausalLM(GPTNeoConfig(**small, attention_types=[[["global"], 1]]))
    loaded, _ = load_pretrained(save(neo, tokenizer, tmp_path / "neo"), dropout=0.25)
    rates = ("embed_dropout", "resid_dropout", "attention_dropout", "classifier_dropout")
    assert [getattr(loaded.config, name) for name in rates] == [0.25] * 4
    assert {m.p for m in loaded.modules() if isinstance(m, torch.nn.Dropout)} == {0.25}

    mamba = MambaForCausalLM(
        MambaConfig(vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=1)
    )
    path = save(mamba, tokenizer, tmp_path / "mamba")
    with pytest.raises(UserError, match="is a mamba model, which has no dropout rate"):
        load_pretrained(path, dropout=0.0)


def test_load_checks_objective_against_architecture(tokenizer, tmp_path) -> None:
    path = save(
        build_model(ModelConfig(family="gpt2"), tokenizer, "causal_lm"), tokenizer, tmp_path / "g"
    )
    with pytest.raises(
        UserError, match=r"objective span_corruption needs an encoder-decoder .*GPT2LMHeadModel"
    ):
        load_pretrained(path, objective="span_corruption")


def test_dtype_is_applied(tokenizer, tmp_path) -> None:
    path = save(
        build_model(ModelConfig(family="llama"), tokenizer, "causal_lm"), tokenizer, tmp_path / "l"
    )
    model, _ = load_pretrained(path, dtype="bfloat16")
    assert next(model.parameters()).dtype == torch.bfloat16
    with pytest.raises(UserError, match="dtype 'float99'"):
        load_pretrained(path, dtype="float99")


def write_pickle_checkpoint(tokenizer, path: Path) -> torch.nn.Module:
    model = build_model(ModelConfig(family="gpt2"), tokenizer, "causal_lm").eval()
    path.mkdir()
    model.config.save_pretrained(path)
    torch.save(model.state_dict(), path / "pytorch_model.bin")
    tokenizer.save_pretrained(path)
    return model


def test_pickle_only_checkpoint_is_refused_unless_allowed(tokenizer, tmp_path) -> None:
    path = tmp_path / "pickled"
    model = write_pickle_checkpoint(tokenizer, path)
    with pytest.raises(UserError) as refused:
        load_pretrained(path)
    assert "pytorch_model.bin holds pickle weights" in refused.value.message
    assert "model.allow_pickle: true" in refused.value.message
    assert "--allow-pickle" in refused.value.message
    loaded, _ = load_pretrained(path, allow_pickle=True)
    assert torch.equal(forward(loaded), forward(model))


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("{tmp}/nowhere", "model directory .*/nowhere does not exist"),
        ("{tmp}/empty", "is not a model directory: it has no config.json"),
        (
            "someone/not-cached-model",
            "not in the local Hugging Face cache .*hf download someone/not-cached-model",
        ),
    ],
)
def test_bad_names_are_user_errors(name, message, tmp_path, monkeypatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match=message):
        load_pretrained(name.format(tmp=tmp_path))


def test_remote_code_stays_off_unless_asked(tmp_path) -> None:
    (tmp_path / "custom").mkdir()
    config = {"model_type": "custom-lm", "auto_map": {"AutoConfig": "code.CustomConfig"}}
    (tmp_path / "custom" / "config.json").write_text(json.dumps(config))
    (tmp_path / "custom" / "model.safetensors").write_bytes(b"")
    with pytest.raises(UserError, match="needs its own Python code.*model.trust_remote_code: true"):
        load_pretrained(tmp_path / "custom")


def test_directory_without_tokenizer_is_refused(tokenizer, tmp_path) -> None:
    build_model(ModelConfig(family="gpt2"), tokenizer, "causal_lm").save_pretrained(tmp_path / "m")
    with pytest.raises(UserError, match="has no tokenizer"):
        load_pretrained(tmp_path / "m")


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to open a connection fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"network call attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_cached_hub_id_loads_without_network(tokenizer, tmp_path, monkeypatch, no_network) -> None:
    from huggingface_hub import constants

    # The Hub cache layout: models--ORG--NAME/{refs/main, snapshots/COMMIT/<files>}
    repo = tmp_path / "hub" / "models--lmforge-test--tiny-gpt2"
    model = build_model(ModelConfig(family="gpt2"), tokenizer, "causal_lm").eval()
    save(model, tokenizer, repo / "snapshots" / "0123abcd")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # local_files_only must be enough
    loaded, _ = load_pretrained("lmforge-test/tiny-gpt2")
    assert torch.equal(forward(loaded), forward(model))


# --------------------------------------------------------------------------- LoRA


@pytest.mark.parametrize(
    ("family", "objective", "auto_class", "targets"),
    [
        ("t5", "seq2seq_sft", AutoModelForSeq2SeqLM, {"q", "v"}),
        ("gpt2", "causal_sft", AutoModelForCausalLM, {"c_attn"}),
    ],
)
def test_lora_train_save_reload_merge(
    family, objective, auto_class, targets, tokenizer, tmp_path, no_network
) -> None:
    base_dir = save(
        build_model(ModelConfig(family=family), tokenizer, objective), tokenizer, tmp_path / "base"
    )
    base, _ = load_pretrained(base_dir, objective=objective)
    base_logits = forward(base)
    model = apply_lora(base, LoraConfig(r=4, alpha=8, dropout=0.0))
    lora_config = model.peft_config["default"]
    assert lora_config.target_modules == targets
    assert lora_config.fan_in_fan_out is (family == "gpt2")

    # One optimizer step so that B (initialised to zero) makes the adapter non-trivial.
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    model(input_ids=INPUT, labels=INPUT).loss.backward()
    optimizer.step()
    model.eval()
    adapted_logits = forward(model)
    assert not torch.allclose(adapted_logits, base_logits, atol=1e-4)

    adapter_dir = save_adapter(model, tmp_path / "adapter", tokenizer=tokenizer)
    files = {p.name for p in adapter_dir.iterdir()}
    assert {"adapter_model.safetensors", "adapter_config.json", "tokenizer.json"} <= files
    assert not files & {"model.safetensors", "pytorch_model.bin"}
    weights = load_file(adapter_dir / "adapter_model.safetensors")
    assert weights and all("lora_A" in k or "lora_B" in k for k in weights)
    recorded = json.loads((adapter_dir / "adapter_config.json").read_text())
    assert recorded["base_model_name_or_path"] == str(base_dir.resolve())

    reloaded, _ = load_pretrained(adapter_dir, objective=objective)
    assert torch.equal(forward(reloaded), adapted_logits)

    merged_dir = merge_and_export(adapter_dir, tmp_path / "merged")
    files = {p.name for p in merged_dir.iterdir()}
    assert {"model.safetensors", "config.json", "tokenizer.json"} <= files
    assert "adapter_config.json" not in files
    merged = auto_class.from_pretrained(merged_dir, local_files_only=True)
    torch.testing.assert_close(forward(merged), adapted_logits, atol=1e-5, rtol=0)


def test_merge_refuses_existing_output_and_plain_dirs(tokenizer, tmp_path) -> None:
    base_dir = save(
        build_model(ModelConfig(family="gpt2"), tokenizer, "causal_lm"),
        tokenizer,
        tmp_path / "base",
    )
    adapter_dir = save_adapter(
        apply_lora(load_pretrained(base_dir)[0], LoraConfig()), tmp_path / "ad"
    )
    (tmp_path / "out").mkdir()
    with pytest.raises(UserError, match="out already exists; pass --overwrite"):
        merge_and_export(adapter_dir, tmp_path / "out")
    merge_and_export(adapter_dir, tmp_path / "out", overwrite=True)
    assert (tmp_path / "out" / "model.safetensors").is_file()
    with pytest.raises(UserError, match="not a LoRA adapter directory"):
        merge_and_export(base_dir, tmp_path / "out2")


@pytest.mark.parametrize(
    ("family", "targets"), [("bert", {"query", "value"}), ("llama", {"q_proj", "v_proj"})]
)
def test_default_lora_targets(family, targets, tokenizer) -> None:
    model = build_model(ModelConfig(family=family), tokenizer, FAMILY_OBJECTIVE[family])
    assert apply_lora(model, LoraConfig()).peft_config["default"].target_modules == targets


def test_lora_targets_can_be_chosen_and_are_checked(tokenizer) -> None:
    model = build_model(ModelConfig(family="llama"), tokenizer, "causal_lm")
    chosen = apply_lora(model, LoraConfig(target_modules=["q_proj", "k_proj", "o_proj"]))
    assert chosen.peft_config["default"].target_modules == {"q_proj", "k_proj", "o_proj"}
    fresh = build_model(ModelConfig(family="llama"), tokenizer, "causal_lm")
    with pytest.raises(UserError, match=r"model.lora.target_modules \['nope'\]"):
        apply_lora(fresh, LoraConfig(target_modules=["nope"]))


def test_adapter_with_pickle_weights_is_refused(tokenizer, tmp_path) -> None:
    base_dir = save(
        build_model(ModelConfig(family="gpt2"), tokenizer, "causal_lm"),
        tokenizer,
        tmp_path / "base",
    )
    adapter_dir = save_adapter(
        apply_lora(load_pretrained(base_dir)[0], LoraConfig()), tmp_path / "ad"
    )
    weights = load_file(adapter_dir / "adapter_model.safetensors")
    torch.save(weights, adapter_dir / "adapter_model.bin")
    (adapter_dir / "adapter_model.safetensors").unlink()
    with pytest.raises(UserError, match="adapter_model.bin holds pickle weights"):
        load_pretrained(adapter_dir)


def test_apply_lora_to_a_loaded_adapter_trains_that_adapter(tokenizer, tmp_path) -> None:
    base_dir = save(
        build_model(ModelConfig(family="gpt2"), tokenizer, "causal_lm"), tokenizer, tmp_path / "b"
    )
    adapter_dir = save_adapter(
        apply_lora(load_pretrained(base_dir)[0], LoraConfig(r=2)), tmp_path / "a"
    )
    loaded, _ = load_pretrained(adapter_dir)
    assert count_parameters(loaded, trainable_only=True) == 0  # loaded for inference
    again = apply_lora(loaded, LoraConfig(r=8))
    assert again is loaded and again.peft_config["default"].r == 2
    assert count_parameters(again, trainable_only=True) == 2 * (2 * 64 + 192 * 2)
