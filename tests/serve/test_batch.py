"""One batched generate call shared by requests with different lengths, stops and streaming:
each gets exactly what ``lmforge.generation.generate`` gives it alone."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from lmforge.generation import DecodingSettings, encode_prompt, generate, pad_prompts
from lmforge.serve.batch import Done, Job, Piece, Sampling, encode, length_groups, run_batch

PROMPTS = ["we are going to the park", "my friend lives in Beijing", "thank you for your help"]


def job(model: Any, tok: Any, text: str, events: list[Any], **fields: Any) -> Job:
    ids = encode_prompt(model, tok, text, 10**9, raw=True)
    fields = {
        "n": 1,
        "max_tokens": 8,
        "stop": [],
        "sampling": Sampling(),
        "stream": False,
        **fields,
    }
    return Job(ids, emit=events.append, **fields)


def alone(model: Any, tok: Any, text: str, max_tokens: int, stop: list[str]) -> Any:
    settings = DecodingSettings(max_new_tokens=max_tokens, stop=stop)
    return generate(model, tok, [text], settings, raw=True)[0][0]


@pytest.mark.parametrize("kind", ["causal", "seq2seq"])
def test_rows_with_their_own_lengths_and_stops_match_generating_alone(loaded, kind) -> None:
    model, tok = loaded[kind]
    first = alone(model, tok, PROMPTS[0], 12, [])
    stop = [first.text[2:4]] if len(first.text) >= 4 else []  # causal: "kk----..." -> "--"
    specs = [(PROMPTS[0], 12, stop), (PROMPTS[1], 3, []), (PROMPTS[2], 9, [])]
    events: list[list[Any]] = [[] for _ in specs]
    jobs = [
        job(model, tok, text, events[i], max_tokens=m, stop=s, first_index=i)
        for i, (text, m, s) in enumerate(specs)
    ]
    assert run_batch(model, tok, jobs) == 3
    for (text, max_tokens, stops), got in zip(specs, events, strict=True):
        assert len(got) == 1 and isinstance(got[0], Done)
        assert got[0].generation == alone(model, tok, text, max_tokens, stops)
    if kind == "causal":
        assert stop and events[0][0].generation.finish_reason == "stop"
        assert events[0][0].generation.text == first.text[:2]
    assert [e[0].generation.completion_tokens for e in events[1:]] == [3, 9]


def test_streamed_pieces_join_to_the_final_text_with_stops_held_back(loaded) -> None:
    model, tok = loaded["causal"]
    events: list[Any] = []
    text = "translate English to Chinese: my friend lives in Beijing"  # greedy: "inginging..."
    streamed = job(model, tok, text, events, max_tokens=12, stop=["gin"], stream=True, n=2)
    run_batch(model, tok, [streamed])
    for index in (0, 1):
        pieces = [e.text for e in events if isinstance(e, Piece) and e.index == index]
        done = [e.generation for e in events if isinstance(e, Done) and e.index == index]
        # "ing" arrives first: "i" is sent, "ng" held back as it might begin "gin"
        assert pieces == ["i", "n"] and done[0].text == "in"
        assert done[0].finish_reason == "stop"


def test_a_cancelled_job_ends_without_a_result_and_its_neighbours_are_unaffected(loaded) -> None:
    model, tok = loaded["causal"]
    kept: list[Any] = []
    dropped: list[Any] = []
    steps: list[tuple[int, int]] = []
    gone = job(model, tok, PROMPTS[0], dropped, max_tokens=50)
    gone.cancelled.set()
    other = job(model, tok, PROMPTS[2], kept, max_tokens=6)
    run_batch(model, tok, [gone, other], lambda tokens, live: steps.append((tokens, live)))
    assert dropped == []
    assert kept[0].generation == alone(model, tok, PROMPTS[2], 6, [])
    # the cancelled row took no token; the batch ended with the other row's 6th token
    assert steps[0] == (1, 1) and len(steps) == 6 and steps[-1] == (1, 0)


def test_a_seeded_sampling_job_gets_the_same_text_every_time(loaded) -> None:
    model, tok = loaded["seq2seq"]
    sampling = Sampling(do_sample=True, seed=7)
    runs = []
    for _ in range(2):
        events: list[Any] = []
        run_batch(model, tok, [job(model, tok, PROMPTS[0], events, n=2, sampling=sampling)])
        runs.append(sorted((e.index, e.generation.text) for e in events))
    assert runs[0] == runs[1]
    assert runs[0][0][1] != runs[0][1][1]  # two samples, not one copied


def test_prompts_are_encoded_in_groups_of_similar_length() -> None:
    assert length_groups([5, 50, 6, 52, 5, 200]) == [[0, 4, 2], [1, 3], [5]]
    assert length_groups([7]) == [[0]] and length_groups([]) == []


def test_seq2seq_rows_of_very_different_lengths_match_generating_alone(loaded) -> None:
    model, tok = loaded["seq2seq"]
    long = " ".join(["please open the window"] * 12)
    events: list[list[Any]] = [[], []]
    jobs = [
        job(model, tok, "hello", events[0], max_tokens=6, n=2),
        job(model, tok, long, events[1], max_tokens=6, first_index=2),
    ]
    run_batch(model, tok, jobs)
    want_short, want_long = alone(model, tok, "hello", 6, []), alone(model, tok, long, 6, [])
    assert [e.generation for e in events[0]] == [want_short, want_short]
    assert [e.generation for e in events[1]] == [want_long]
    assert want_long.prompt_tokens > 10 * want_short.prompt_tokens


def test_encoding_without_padding_gives_the_padded_batchs_states(loaded) -> None:
    model, tok = loaded["seq2seq"]
    texts = ["hello", " ".join(["please open the window"] * 12), "thank you for your help"]
    jobs = [job(model, tok, t, [], n=n) for t, n in zip(texts, (2, 1, 1), strict=True)]
    got = encode(model, jobs, tok.pad_token_id).last_hidden_state
    rows = [j.prompt_ids for j in jobs for _ in range(j.n)]
    ids, mask = pad_prompts(rows, tok.pad_token_id, False, torch.device("cpu"))
    with torch.no_grad():
        want = model.get_encoder()(input_ids=ids, attention_mask=mask).last_hidden_state
    assert got.shape == want.shape == (4, max(len(r) for r in rows), model.config.d_model)
    for row, prompt in enumerate(rows):
        assert torch.allclose(got[row, : len(prompt)], want[row, : len(prompt)], atol=1e-5)
        assert not got[row, len(prompt) :].any()  # padding: zeros, masked out
