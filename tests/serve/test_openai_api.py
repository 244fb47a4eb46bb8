"""The official ``openai`` client against a real server, for a seq2seq and a causal model:
answers equal ``lmforge.generation.generate``'s, streams join to the same text, n, stop, seed."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from lmforge.generation import DecodingSettings, generate, prompting_for, render_rows

NAME = "tiny"
CAUSAL_TEXT = "we are going to the park"  # greedy, raw: "kk----------"


@pytest.fixture(scope="module", params=["seq2seq", "causal"])
def served(request: pytest.FixtureRequest, serve: Any) -> Iterator[Any]:
    with serve(request.param, model_name=NAME) as server:
        server.kind = request.param
        yield server


def expected(served: Any, loaded: Any, text: str, max_tokens: int, raw: bool, **kw: Any) -> Any:
    model, tok = loaded[served.kind]
    settings = DecodingSettings(max_new_tokens=max_tokens, **kw)
    return generate(model, tok, [text], settings, raw=raw)[0][0]


def chat_source(served: Any, model_dirs: Any, text: str) -> str:
    """The source a one-message chat becomes: the fine-tuning template (seq2seq card:
    translate) or plain text (the causal model has no card)."""
    prompting = prompting_for(model_dirs[served.kind])
    field = "source" if prompting.task == "translate" else "text"
    return render_rows([{field: text}], prompting)[0]


def test_models_lists_the_served_name(served) -> None:
    models = served.client().models.list()
    assert [m.id for m in models.data] == [NAME]
    assert served.client().models.retrieve(NAME).id == NAME


def test_completion_is_generate_on_the_raw_prompt(served, loaded) -> None:
    answer = served.client().completions.create(
        model=NAME, prompt=CAUSAL_TEXT, max_tokens=7, temperature=0
    )
    want = expected(served, loaded, CAUSAL_TEXT, 7, raw=True)
    assert answer.object == "text_completion" and answer.id.startswith("cmpl-")
    [choice] = answer.choices
    assert (choice.index, choice.text, choice.finish_reason) == (0, want.text, want.finish_reason)
    assert answer.usage.prompt_tokens == want.prompt_tokens
    assert answer.usage.completion_tokens == want.completion_tokens == 7
    assert answer.usage.total_tokens == want.prompt_tokens + 7


def test_chat_renders_the_conversation_with_the_models_template(served, loaded, model_dirs) -> None:
    answer = served.client().chat.completions.create(
        model=NAME,
        messages=[{"role": "user", "content": "good morning everyone"}],
        max_tokens=6,
        temperature=0,
    )
    source = chat_source(served, model_dirs, "good morning everyone")
    want = expected(served, loaded, source, 6, raw=False)
    assert answer.object == "chat.completion" and answer.id.startswith("chatcmpl-")
    [choice] = answer.choices
    assert choice.message.role == "assistant" and choice.message.content == want.text
    assert choice.finish_reason == want.finish_reason
    assert answer.usage.prompt_tokens == want.prompt_tokens
    if served.kind == "seq2seq":
        assert source == "translate English to Chinese: good morning everyone"


def test_streamed_completion_joins_to_the_same_text(served) -> None:
    client = served.client()
    whole = client.completions.create(model=NAME, prompt=CAUSAL_TEXT, max_tokens=9, temperature=0)
    chunks = list(
        client.completions.create(
            model=NAME, prompt=CAUSAL_TEXT, max_tokens=9, temperature=0, stream=True
        )
    )
    assert "".join(c.choices[0].text for c in chunks) == whole.choices[0].text
    assert [c.choices[0].finish_reason for c in chunks][-1] == "length"
    assert all(c.choices[0].finish_reason is None for c in chunks[:-1])
    assert len({c.id for c in chunks}) == 1


def test_streamed_chat_sends_role_then_content_then_usage(served) -> None:
    stream = served.client().chat.completions.create(
        model=NAME,
        messages=[{"role": "user", "content": CAUSAL_TEXT}],
        max_tokens=5,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 5
    assert all(c.usage is None for c in chunks[:-1])
    assert chunks[-2].choices[0].finish_reason == "length"
    assert all(c.object == "chat.completion.chunk" for c in chunks)


def test_the_stream_is_server_sent_events_ending_with_done(served) -> None:
    body = {"model": NAME, "prompt": "hi", "max_tokens": 2, "stream": True}
    with httpx.stream("POST", f"{served.url}/v1/completions", json=body, timeout=30) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines)
    assert lines[-1] == "data: [DONE]"


def test_n_gives_that_many_choices_for_each_prompt(served) -> None:
    client = served.client()
    greedy = client.completions.create(
        model=NAME, prompt=["hello", CAUSAL_TEXT], n=2, max_tokens=4, temperature=0
    )
    assert [c.index for c in greedy.choices] == [0, 1, 2, 3]
    texts = [c.text for c in greedy.choices]
    assert texts[0] == texts[1] and texts[2] == texts[3]  # greedy: the same answer twice
    prompts = client.completions.create(model=NAME, prompt=["hello", CAUSAL_TEXT], max_tokens=4)
    assert greedy.usage.prompt_tokens == prompts.usage.prompt_tokens  # counted once per prompt
    sampled = client.chat.completions.create(
        model=NAME, messages=[{"role": "user", "content": "hi"}], n=2, max_tokens=8, seed=3
    )
    assert len(sampled.choices) == 2 and sampled.usage.completion_tokens == 16


def test_stop_cuts_the_text_and_ends_with_stop(served) -> None:
    client = served.client()
    whole = client.completions.create(
        model=NAME, prompt=CAUSAL_TEXT, max_tokens=12, temperature=0.8, seed=11
    ).choices[0]
    if len(whole.text) < 4:
        pytest.skip(f"this model's answer {whole.text!r} is too short to hold a stop string")
    stop = whole.text[2:4]
    cut = whole.text[: whole.text.find(stop)]
    for stream in (False, True):
        answer = client.completions.create(
            model=NAME,
            prompt=CAUSAL_TEXT,
            max_tokens=12,
            temperature=0.8,
            seed=11,
            stop=[stop, "never there"],
            stream=stream,
        )
        chunks = list(answer) if stream else [answer]
        assert "".join(c.choices[0].text for c in chunks) == cut
        assert chunks[-1].choices[0].finish_reason == "stop"


def test_the_same_seed_gives_the_same_samples(served) -> None:
    client = served.client()

    def sample(seed: int) -> list[str | None]:
        answer = client.chat.completions.create(
            model=NAME,
            messages=[{"role": "user", "content": "good morning"}],
            n=2,
            max_tokens=10,
            temperature=1.0,
            seed=seed,
        )
        return [c.message.content for c in answer.choices]

    first = sample(5)
    assert sample(5) == first
    assert sample(6) != first


def test_unknown_fields_are_tolerated(served) -> None:
    answer = served.client().completions.create(
        model=NAME, prompt="hi", max_tokens=2, user="someone", extra_body={"lmforge_x": 1}
    )
    assert answer.usage.completion_tokens >= 1
