"""Decoding options, batching, seeds and streaming, on tiny models built here.

Two kinds of model: *trained* ones (T5 and GPT-2, a few dozen steps) that answer every prompt
with "hello world" or "hello there", half and half, so outputs can be asserted exactly; and
*random* ones whose outputs depend on the prompt, for padding and reproducibility checks.
"""

from __future__ import annotations

import gc
import json
import random
import runpy
import threading
from pathlib import Path

import datasets
import pytest
import torch
from transformers import PreTrainedTokenizerFast

from lmforge.config import ModelConfig, ObjectiveConfig, TemplateConfig
from lmforge.errors import UserError
from lmforge.generation import (
    DecodingSettings,
    Prompting,
    encode_prompt,
    generate,
    generate_texts,
    prompting_for,
    render_rows,
    stream,
)
from lmforge.models import build_model
from lmforge.objectives.sft import PaddingCollator, causal_prepare, seq2seq_prepare
from lmforge.tokenizers import train_tokenizer

TINY = runpy.run_path(str(Path(__file__).resolve().parent / "backends" / "tiny_models.py"))

WORDS = "apple river stone cloud lamp tiger paper green seven orange".split()
ANSWERS = ("hello world", "hello there")
FAMILY = {"seq2seq": "t5", "causal": "gpt2"}


def _prompts(n: int, seed: int, longest: int = 6) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choices(WORDS, k=rng.randint(1, longest))) for _ in range(n)]


PROMPTS = _prompts(8, seed=0)


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerFast:
    """lmforge's byte-level BPE, without sentinels so random models mostly emit text."""
    corpus = [" ".join(WORDS), *ANSWERS, "你好，世界"] * 20
    datasets.disable_progress_bars()
    return train_tokenizer(corpus, kind="bpe", vocab_size=320, num_sentinels=0)


@pytest.fixture(scope="module", params=["seq2seq", "causal"])
def trained(request: pytest.FixtureRequest, tokenizer):
    """A model trained to answer any prompt with one of ANSWERS, 50/50."""
    kind = request.param
    objective, prepare = {
        "seq2seq": ("seq2seq_sft", seq2seq_prepare),
        "causal": ("causal_sft", causal_prepare),
    }[kind]
    model = build_model(ModelConfig(family=FAMILY[kind], dropout=0.0), tokenizer, objective)
    rows = [{"source": p, "target": a} for p in PROMPTS for a in ANSWERS]
    data = prepare(datasets.Dataset.from_list(rows), tokenizer, ObjectiveConfig(), 0)
    batch = PaddingCollator(tokenizer)(list(data))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2 if kind == "seq2seq" else 3e-3)
    for _ in range(40):
        model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return model.eval(), tokenizer


_RANDOM: dict[str, torch.nn.Module] = {}


@pytest.fixture(scope="module")
def random_model(tokenizer):
    """``random_model(family)``: untrained weights, built once per module."""

    def make(family: str) -> torch.nn.Module:
        if family not in _RANDOM:
            _RANDOM[family] = TINY["untrained"](family, tokenizer)
        return _RANDOM[family]

    return make


# --------------------------------------------------------------------------- trained models


def test_greedy_is_deterministic_and_counts_tokens(trained) -> None:
    model, tokenizer = trained
    settings = DecodingSettings(max_new_tokens=12)
    first = generate(model, tokenizer, PROMPTS[:3], settings)
    assert first == generate(model, tokenizer, PROMPTS[:3], settings)
    for prompt, (generation,) in zip(PROMPTS[:3], first, strict=True):
        assert generation.text in ANSWERS
        assert generation.finish_reason == "stop"  # the eos token it was trained to end with
        answer_tokens = len(tokenizer(generation.text, add_special_tokens=False)["input_ids"])
        assert generation.completion_tokens == answer_tokens + 1  # + eos
        assert generation.prompt_tokens == len(encode_prompt(model, tokenizer, prompt, 512))


def test_causal_model_never_returns_the_prompt(trained) -> None:
    model, tokenizer = trained
    long_prompt = "apple river stone cloud lamp tiger"
    (generation,) = generate(model, tokenizer, [long_prompt], DecodingSettings())[0]
    assert generation.text.startswith("hello")
    assert not any(word in generation.text for word in WORDS)


def test_max_new_tokens_gives_finish_reason_length(trained) -> None:
    model, tokenizer = trained
    full = generate(model, tokenizer, PROMPTS[:1], DecodingSettings())[0][0]
    (cut,) = generate(model, tokenizer, PROMPTS[:1], DecodingSettings(max_new_tokens=2))[0]
    assert cut.finish_reason == "length"
    assert cut.completion_tokens == 2
    assert full.text.startswith(cut.text) and len(cut.text) < len(full.text)


def test_stop_strings_cut_the_text_and_finish_with_stop(trained) -> None:
    model, tokenizer = trained
    greedy = [g[0].text for g in generate(model, tokenizer, PROMPTS, DecodingSettings())]
    stop = "wor" if "hello world" in greedy else "the"
    out = generate(model, tokenizer, PROMPTS, DecodingSettings(stop=[stop, "zzz"]))
    for text, (generation,) in zip(greedy, out, strict=True):
        assert generation.finish_reason == "stop"
        assert generation.text == text.split(stop)[0]
        if stop in text:  # "hello" then " " then the stop: fewer tokens than the full answer
            assert generation.text == "hello "
            assert generation.completion_tokens < len(tokenizer(text)["input_ids"]) + 1
    # a stop string inside a token: "hello" is one token, cut after "he"
    (generation,) = generate(model, tokenizer, PROMPTS[:1], DecodingSettings(stop="llo"))[0]
    assert (generation.text, generation.completion_tokens) == ("he", 1)


def test_beams_return_distinct_sequences(trained) -> None:
    model, tokenizer = trained
    settings = DecodingSettings(num_beams=4, num_return_sequences=2, early_stopping=True)
    (group,) = generate(model, tokenizer, PROMPTS[:1], settings)
    assert sorted(g.text for g in group) == sorted(ANSWERS)
    assert all(g.finish_reason == "stop" for g in group)


def test_sampling_draws_both_answers(trained) -> None:
    model, tokenizer = trained
    settings = DecodingSettings(do_sample=True, num_return_sequences=24, seed=0)
    (group,) = generate(model, tokenizer, PROMPTS[:1], settings)
    texts = [g.text for g in group]
    assert len(texts) == 24
    assert {"hello world", "hello there"} <= set(texts)


# --------------------------------------------------------------------------- random models


@pytest.mark.parametrize("family", ["t5", "gpt2", "llama"])
def test_batched_greedy_equals_one_by_one(random_model, tokenizer, family) -> None:
    """Padding (right for seq2seq, left for causal) must not change a single token."""
    model = random_model(family)
    sources = _prompts(7, seed=1, longest=12)
    settings = DecodingSettings(max_new_tokens=10)
    batched = generate(model, tokenizer, sources, settings, batch_size=4)
    alone = [generate(model, tokenizer, [s], settings, batch_size=1)[0] for s in sources]
    assert batched == alone
    assert len({group[0].text for group in batched}) > 1  # outputs do depend on the prompt
    assert all(g[0].finish_reason == "length" and g[0].completion_tokens == 10 for g in batched)


def test_several_sequences_stay_with_their_source(random_model, tokenizer) -> None:
    model = random_model("t5")
    sources = _prompts(3, seed=6, longest=10)
    settings = DecodingSettings(max_new_tokens=6, num_beams=3, num_return_sequences=2)
    batched = generate(model, tokenizer, sources, settings, batch_size=3)
    assert [len(group) for group in batched] == [2, 2, 2]
    assert batched == [generate(model, tokenizer, [s], settings)[0] for s in sources]


def test_seeded_sampling_is_reproducible_and_leaves_global_rng_alone(random_model, tokenizer):
    model = random_model("gpt2")
    sources = _prompts(3, seed=2)

    def sample(seed: int) -> list[str]:
        settings = DecodingSettings(max_new_tokens=8, do_sample=True, seed=seed)
        return generate_texts(model, tokenizer, sources, settings)

    torch.manual_seed(123)
    state = torch.get_rng_state()
    first = sample(1)
    assert torch.equal(torch.get_rng_state(), state)
    assert sample(1) == first
    assert sample(2) != first
    assert torch.equal(torch.get_rng_state(), state)


def test_top_k_one_and_tiny_top_p_are_greedy(random_model, tokenizer) -> None:
    model = random_model("t5")
    sources = _prompts(3, seed=3)
    greedy = generate_texts(model, tokenizer, sources, DecodingSettings(max_new_tokens=8))
    for options in ({"top_k": 1}, {"top_p": 1e-6}, {"temperature": 1e-4}):
        settings = DecodingSettings(max_new_tokens=8, do_sample=True, seed=0, **options)
        assert generate_texts(model, tokenizer, sources, settings) == greedy, options
    hot = DecodingSettings(max_new_tokens=8, do_sample=True, seed=0, temperature=5.0)
    assert generate_texts(model, tokenizer, sources, hot) != greedy


def test_repetition_controls_change_the_output() -> None:
    tokenizer = TINY["word_tokenizer"]()
    model = TINY["untrained"]("t5", tokenizer)
    sources = ["w1 w2 w3", "w4", "w5 w6"]

    def repeats(**options: float) -> int:
        settings = DecodingSettings(max_new_tokens=12, **options)
        texts = generate_texts(model, tokenizer, sources, settings)
        assert all(texts)
        return sum(len(t.split()) - len(set(t.split())) for t in texts)

    assert repeats() >= 3 * 10  # an untrained model says one word again and again
    assert repeats(no_repeat_ngram_size=1) == 0
    assert repeats(repetition_penalty=20.0) < repeats(repetition_penalty=1.5) <= repeats()


def test_generate_texts_is_the_first_text_stripped(random_model, tokenizer) -> None:
    model = random_model("gpt2")
    sources = _prompts(2, seed=4)
    settings = DecodingSettings(max_new_tokens=6)
    full = generate(model, tokenizer, sources, settings)
    assert generate_texts(model, tokenizer, sources, settings) == [g[0].text.strip() for g in full]


def test_long_causal_prompts_are_cut_to_fit_the_positions(random_model, tokenizer) -> None:
    model = random_model("gpt2")  # tiny preset: 512 positions
    (generation,) = generate(model, tokenizer, ["apple " * 600], DecodingSettings())[0]
    assert generation.prompt_tokens == 512 - 64
    with pytest.raises(UserError, match="leaves no room for a prompt"):
        generate(model, tokenizer, ["apple"], DecodingSettings(max_new_tokens=600))


def test_progress_bar_goes_to_stderr(random_model, tokenizer, capsys) -> None:
    generate(
        random_model("t5"), tokenizer, ["a", "b"], DecodingSettings(max_new_tokens=2), progress=True
    )
    captured = capsys.readouterr()
    assert "generating" in captured.err and captured.out == ""


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_new_tokens": 0}, "max_new_tokens must be at least 1"),
        ({"num_beams": 0}, "num_beams must be at least 1"),
        ({"num_return_sequences": 3}, "needs sampling"),
        ({"num_beams": 2, "num_return_sequences": 3, "do_sample": True}, "more than num_beams"),
        ({"do_sample": True, "temperature": 0.0}, "temperature must be > 0"),
        ({"top_p": 1.5}, r"top_p must be in \(0, 1\]"),
        ({"top_k": -1}, "top_k must be 0"),
        ({"repetition_penalty": 0.0}, "repetition_penalty must be > 0"),
        ({"no_repeat_ngram_size": -1}, "no_repeat_ngram_size"),
        ({"stop": ["", "x"]}, "stop strings must be non-empty"),
        ({"min_new_tokens": 99}, "min_new_tokens must be between 0 and max_new_tokens"),
    ],
)
def test_bad_settings_are_user_errors(options, message) -> None:
    with pytest.raises(UserError, match=message):
        DecodingSettings(**options).check()


# --------------------------------------------------------------------------- streaming


@pytest.mark.parametrize("family", ["t5", "gpt2"])
def test_stream_joins_to_the_greedy_text(random_model, tokenizer, family) -> None:
    model = random_model(family)
    settings = DecodingSettings(max_new_tokens=24)
    for source in _prompts(3, seed=5):
        expected = generate(model, tokenizer, [source], settings)[0][0]
        pieces = stream(model, tokenizer, source, settings)
        assert "".join(pieces) == expected.text
        assert pieces.result == expected


def test_stream_with_stop_string_and_eos(trained) -> None:
    model, tokenizer = trained
    for settings in (DecodingSettings(), DecodingSettings(stop=["llo", "or"])):
        expected = generate(model, tokenizer, PROMPTS[:1], settings)[0][0]
        pieces = stream(model, tokenizer, PROMPTS[0], settings)
        texts = list(pieces)
        assert "".join(texts) == expected.text
        assert pieces.result == expected and expected.finish_reason == "stop"
        assert not any(stop in "".join(texts) for stop in settings.stop)


def test_stopping_a_stream_early_ends_the_generating_thread(random_model, tokenizer) -> None:
    model = random_model("gpt2")
    was_training = model.training
    calls = []
    hook = model.register_forward_hook(lambda *args: calls.append(1))
    try:
        pieces = stream(model, tokenizer, "apple", DecodingSettings(max_new_tokens=400))
        next(pieces)
        pieces.close()
        assert not [t for t in threading.enumerate() if t.name == "lmforge-stream"]
        assert len(calls) < 100  # stopped long before max_new_tokens
        assert pieces.result is None
        # a reader that just drops the stream (a disconnected client) stops it too
        dropped = stream(model, tokenizer, "river", DecodingSettings(max_new_tokens=400))
        next(dropped)
        del dropped
        gc.collect()
        assert not [t for t in threading.enumerate() if t.name == "lmforge-stream"]
        assert len(calls) < 200
    finally:
        hook.remove()
    assert model.training == was_training


def test_stream_refuses_beams_and_reports_thread_errors(random_model, tokenizer) -> None:
    model = random_model("gpt2")
    with pytest.raises(UserError, match="streaming produces one sequence"):
        stream(model, tokenizer, "apple", DecodingSettings(num_beams=2))

    def broken(*args, **kwargs):
        raise RuntimeError("out of memory")

    model.generate, original = broken, model.generate
    try:
        with pytest.raises(RuntimeError, match="out of memory"):
            list(stream(model, tokenizer, "apple", DecodingSettings()))
    finally:
        model.generate = original


def test_seeded_stream_matches_seeded_generate(random_model, tokenizer) -> None:
    model = random_model("gpt2")
    settings = DecodingSettings(max_new_tokens=12, do_sample=True, seed=7)
    expected = generate(model, tokenizer, ["apple"], settings)[0][0]
    assert "".join(stream(model, tokenizer, "apple", settings)) == expected.text


# --------------------------------------------------------------------------- prompting


def test_prompting_comes_from_the_model_card(tmp_path) -> None:
    card = {
        "tasks": [{"task": "summarize", "template": {"prefix": "tl;dr: "}}],
        "max_source_length": 64,
    }
    (tmp_path / "lmforge.json").write_text(json.dumps(card))
    prompting = prompting_for(tmp_path)
    assert prompting == Prompting("summarize", TemplateConfig(prefix="tl;dr: "), 64)
    assert render_rows([{"document": "text"}], prompting) == ["tl;dr: text"]
    assert prompting_for(tmp_path, "qa").template == TemplateConfig()
    assert prompting_for(tmp_path / "nothing-here") == Prompting()

    card["tasks"].append({"task": "qa", "template": {}})
    (tmp_path / "lmforge.json").write_text(json.dumps(card))
    with pytest.raises(UserError, match=r"several tasks \(summarize, qa\); choose one with --task"):
        prompting_for(tmp_path)
    with pytest.raises(UserError, match="unknown task 'sumarize'"):
        prompting_for(tmp_path, "sumarize")


def test_render_rows_maps_columns_and_names_the_bad_row() -> None:
    prompting = Prompting("summarize")
    rows = [{"body": "one"}, {"body": ""}]
    assert render_rows(rows[:1], prompting, {"document": "body"}) == ["summarize: one"]
    with pytest.raises(UserError, match=r"data.csv row 2: task summarize needs the field"):
        render_rows(rows, prompting, {"document": "body"}, where="data.csv")
    with pytest.raises(UserError, match="--column answer: not an input field of task summarize"):
        render_rows(rows, prompting, {"answer": "body"})


def test_raw_prompts_skip_the_fine_tuning_separator(random_model, tokenizer) -> None:
    from lmforge.generation import encode_prompt

    model = random_model("gpt2")
    plain = tokenizer("def f(x):\n    return", add_special_tokens=False)["input_ids"]
    templated = encode_prompt(model, tokenizer, "def f(x):\n    return", 64)
    assert encode_prompt(model, tokenizer, "def f(x):\n    return", 64, raw=True) == plain
    assert templated[: len(plain)] == plain and len(templated) > len(plain)
