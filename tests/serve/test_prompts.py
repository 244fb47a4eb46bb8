"""Which tokens a prompt or a conversation becomes, for each kind of model, and its limits."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from lmforge.objectives.sft import causal_prompt_ids, seq2seq_source_ids
from lmforge.serve.prompts import PromptEncoder, conversation_text
from lmforge.serve.schemas import APIError, ChatMessage

TEMPLATE = (
    "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<assistant>{% endif %}"
)


def messages(*pairs: tuple[str, str]) -> list[ChatMessage]:
    return [ChatMessage(role=role, content=text) for role, text in pairs]  # type: ignore[arg-type]


def card_dir(path: Path, card: dict[str, Any]) -> Path:
    """A directory holding only a model card: what PromptEncoder reads from a model dir."""
    path.mkdir()
    (path / "lmforge.json").write_text(json.dumps(card), encoding="utf-8")
    return path


def test_a_conversation_becomes_its_last_user_message() -> None:
    assert conversation_text(messages(("user", "hello there"))) == "hello there"
    long = messages(("system", "be brief"), ("user", "hi"), ("assistant", "yes"), ("user", "go"))
    assert conversation_text(long) == "go"
    with pytest.raises(APIError, match="the last message must be the user's") as caught:
        conversation_text(messages(("user", "hi"), ("assistant", "yes")))
    assert caught.value.param == "messages"


def test_seq2seq_chat_uses_the_fine_tuning_template(loaded, model_dirs) -> None:
    model, tok = loaded["seq2seq"]
    encoder = PromptEncoder(model, tok, model_dirs["seq2seq"])
    ids = encoder.chat_ids(messages(("user", "good morning")))
    assert ids == seq2seq_source_ids(tok, "translate English to Chinese: good morning", 10**6)
    assert encoder.max_prompt_tokens == 64  # the card's max_source_length
    assert encoder.context_length is None  # no position limit on T5's output
    assert encoder.room([5] * 10, cap=512) == 32  # the card's max_target_length
    # a completion prompt is the source as given: no template
    assert encoder.completion_ids("good morning") == seq2seq_source_ids(tok, "good morning", 99)


def test_a_causal_model_with_a_chat_template_uses_it(loaded, model_dirs) -> None:
    model, tok = loaded["causal"]
    templated = copy.deepcopy(tok)
    templated.chat_template = TEMPLATE
    encoder = PromptEncoder(model, templated, model_dirs["causal"])
    ids = encoder.chat_ids(messages(("system", "be brief"), ("user", "hi")))
    assert tok.decode(ids) == "<system>be brief\n<user>hi\n<assistant>"
    assert encoder.completion_ids("hi") == tok("hi", add_special_tokens=False)["input_ids"]


def test_a_causal_model_lmforge_fine_tuned_uses_its_task_template(loaded, tmp_path) -> None:
    model, tok = loaded["causal"]
    templated = copy.deepcopy(tok)
    templated.chat_template = TEMPLATE  # ignored: the model learned the task template
    card = {"objective": "causal_sft", "tasks": [{"task": "qa", "template": {}}]}
    encoder = PromptEncoder(model, templated, card_dir(tmp_path / "m", card))
    assert not encoder.uses_chat_template
    assert encoder.chat_ids(messages(("user", "why?"))) == causal_prompt_ids(tok, "question: why?")


def test_without_a_card_or_template_a_causal_chat_is_plain_text_plus_separator(
    loaded, model_dirs
) -> None:
    model, tok = loaded["causal"]
    encoder = PromptEncoder(model, tok, model_dirs["causal"])
    assert encoder.chat_ids(messages(("user", "hi"))) == causal_prompt_ids(tok, "hi")
    assert encoder.max_prompt_tokens == 512 and encoder.context_length == 512


def test_limits_are_checked_not_cut(loaded, model_dirs) -> None:
    model, tok = loaded["causal"]
    encoder = PromptEncoder(model, tok, model_dirs["causal"], max_prompt_tokens=500)
    encoder.check_length([5] * 500, 12, "prompt")
    with pytest.raises(APIError, match="maximum context length is 512 tokens") as caught:
        encoder.check_length([5] * 500, 13, "prompt")
    assert caught.value.code == "context_length_exceeded" and caught.value.param == "max_tokens"
    with pytest.raises(APIError, match="at most 500") as caught:
        encoder.check_length([5] * 501, 1, "messages")
    assert caught.value.param == "messages"
    assert encoder.room([5] * 500, cap=64) == 12 and encoder.room([5], cap=64) == 64


def test_token_id_prompts_are_used_as_given_within_the_vocabulary(loaded, model_dirs) -> None:
    model, tok = loaded["causal"]
    encoder = PromptEncoder(model, tok, model_dirs["causal"])
    assert encoder.completion_ids([7, 8, 9]) == [7, 8, 9]
    with pytest.raises(APIError, match=f"outside the vocabulary \\(0..{len(tok) - 1}\\)"):
        encoder.completion_ids([7, len(tok)])
    with pytest.raises(APIError, match="empty"):
        encoder.completion_ids("")
