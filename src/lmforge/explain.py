"""``lmforge explain``: where a model looks. Attention maps for one input, and for the output
the model generates from it, as PNG heatmaps, an index.html to browse them, and the numbers.

What is shown for each kind of model:

* encoder (BERT): self-attention over the input tokens;
* causal (GPT-2, Llama): self-attention over the prompt and the greedily generated tokens,
  from one forward pass over the whole sequence (row t: where token t looks, itself and the
  tokens before it);
* seq2seq (T5): encoder self-attention over the input, decoder self-attention over the
  output, and cross-attention from output to input. Decoder row t is the decoder reading
  output token t (the start token first) while it predicts token t+1.

The input is what ``lmforge generate`` would send: rendered with the task template of the
model card, and for a fine-tuned causal model followed by the separator it answers after.

Weights come from the model's own forward pass with ``output_attentions=True``. That needs the
"eager" attention implementation, set after loading: PyTorch's fused SDPA kernel never
materialises the weights, and transformers 5 returns none with it. Outputs are the same.

Written to OUT (whole or not at all)::

    index.html            every heatmap, by map, layer and head
    attentions.npz        one float32 array per map: (layers, heads, queries, keys)
    explain.json          model, input, output, tokens (ids, exact text, labels), shapes, files
    <map>/mean.png        averaged over layers and heads
    <map>/layerL_mean.png averaged over the heads of layer L (0-based, as in the arrays)
    <map>/layerL_headH.png

Token labels are text, never byte-level symbols: each token is decoded in context, and the
tokens that together make one character (byte-level BPE splits a Chinese character into
bytes) all show that character, marked ``[1/2]``, ``[2/2]``. Spaces show as ␣, newlines as ↵,
tabs as ⇥.
"""

from __future__ import annotations

import html
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lmforge.errors import UserError
from lmforge.fsutil import atomic_dir, atomic_file, refuse_to_overwrite, write_json_atomic
from lmforge.models import ModelKind, model_kind
from lmforge.reports.fonts import label_fonts, missing_glyphs_warning

REPLACEMENT = "\ufffd"  # what decoding shows for an incomplete UTF-8 sequence
VISIBLE_WHITESPACE = str.maketrans({" ": "␣", "\n": "↵", "\t": "⇥"})
DEFAULT_MAX_NEW_TOKENS = 20
UNCUT = 1 << 30  # a token budget no input reaches
# name -> (title, row axis, column axis)
MAPS: dict[str, tuple[str, str, str]] = {
    "self": ("self-attention", "token (query)", "token (key)"),
    "encoder_self": ("encoder self-attention", "input token (query)", "input token (key)"),
    "decoder_self": ("decoder self-attention", "output token (query)", "output token (key)"),
    "cross": ("cross-attention", "output token (query)", "input token (key)"),
}


@dataclass(frozen=True)
class Tokens:
    """A token sequence as people read it."""

    ids: list[int]
    texts: list[str]  # the exact text of each token (a split character: the whole character)
    labels: list[str]  # what heatmaps show: visible whitespace, [i/k] on character pieces


@dataclass
class AttentionMap:
    """One kind of attention: weights (layers, heads, queries, keys), rows summing to 1."""

    name: str
    weights: np.ndarray
    queries: Tokens
    keys: Tokens

    @property
    def title(self) -> str:
        return MAPS[self.name][0]


@dataclass
class Explanation:
    """What ``explain`` found and where it wrote it."""

    model: str
    kind: ModelKind
    source: str  # the input as the model saw it (rendered with the task template)
    output: str | None  # the generated text (None for encoders)
    maps: list[AttentionMap]
    out_dir: Path
    warnings: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- tokens


def token_texts(tokenizer: Any, ids: Sequence[int]) -> Tokens:
    """Decode each token in context: the text it adds to the decoded prefix.

    A token that ends inside a multi-byte character adds nothing readable on its own, so it
    is grouped with the following tokens until the character is complete; every token of the
    group gets the group's text, labelled ``text[i/k]``."""
    ids = [int(i) for i in ids]
    texts: list[str] = []
    labels: list[str] = []
    decoded, start = "", 0
    for end in range(1, len(ids) + 1):
        text = tokenizer.decode(
            ids[:end], skip_special_tokens=False, clean_up_tokenization_spaces=False
        )
        if text.endswith(REPLACEMENT) and end < len(ids):
            continue  # the character goes on in the next token
        if text.startswith(decoded):
            piece = text[len(decoded) :]
        else:  # the decoder rewrote the prefix (e.g. dropped a leading space): decode alone
            piece = tokenizer.decode(ids[start:end], skip_special_tokens=False)
        count = end - start
        for n in range(1, count + 1):
            shown = piece.translate(VISIBLE_WHITESPACE) or tokenizer.convert_ids_to_tokens(
                ids[start + n - 1]
            )
            texts.append(piece)
            labels.append(f"{shown}[{n}/{count}]" if count > 1 else shown)
        decoded, start = text, end
    return Tokens(ids, texts, labels)


# --------------------------------------------------------------------------- attentions


def _stack(layers: Sequence[torch.Tensor]) -> np.ndarray:
    """Per-layer (1, heads, queries, keys) tensors -> (layers, heads, queries, keys) float32."""
    return torch.stack([a[0] for a in layers]).float().cpu().numpy()


def _prompt_ids(
    model: Any,
    tokenizer: Any,
    source: str,
    kind: ModelKind,
    card: dict[str, Any],
    budget: int | None,
) -> list[int]:
    """The ids the model reads for ``source``, cut to ``budget`` tokens (None: uncut)."""
    from lmforge.generation import encode_prompt

    if kind == "encoder":
        encoded = tokenizer(source, truncation=budget is not None, max_length=budget)
        return [int(i) for i in encoded["input_ids"]]
    # a causal model fine-tuned to answer (causal_sft) gets its separator; others continue text
    raw = kind == "causal" and card.get("objective") != "causal_sft"
    return encode_prompt(model, tokenizer, source, budget or UNCUT, raw=raw)


@torch.no_grad()
def attention_maps(
    model: Any,
    tokenizer: Any,
    prompt: list[int],
    *,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
) -> tuple[list[AttentionMap], str | None]:
    """The attention maps of ``prompt`` (token ids) and of the greedy output generated from
    it; returns (maps, generated text). The model must use eager attention."""
    kind = model_kind(model)
    model.eval()
    device = next(model.parameters()).device
    ids = torch.tensor([prompt], device=device)
    mask = torch.ones_like(ids)
    if kind == "encoder":
        out = model(input_ids=ids, attention_mask=mask, output_attentions=True)
        tokens = token_texts(tokenizer, prompt)
        return [AttentionMap("self", _stack(out.attentions), tokens, tokens)], None
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    generated = ids
    if max_new_tokens > 0:
        generated = model.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            num_beams=1,
            pad_token_id=pad,
            eos_token_id=eos,
        )
    if kind == "causal":
        sequence = generated[0].tolist()
        out = model(input_ids=generated, output_attentions=True)
        tokens = token_texts(tokenizer, sequence)
        output = tokenizer.decode(sequence[len(prompt) :], skip_special_tokens=True)
        return [AttentionMap("self", _stack(out.attentions), tokens, tokens)], output
    # seq2seq: generate() returns the decoder sequence, starting with the decoder start token
    start = model.generation_config.decoder_start_token_id
    if max_new_tokens == 0:
        generated = torch.tensor([[start if start is not None else pad]], device=device)
    out = model(
        input_ids=ids, attention_mask=mask, decoder_input_ids=generated, output_attentions=True
    )
    source, target = token_texts(tokenizer, prompt), token_texts(tokenizer, generated[0].tolist())
    maps = [
        AttentionMap("encoder_self", _stack(out.encoder_attentions), source, source),
        AttentionMap("decoder_self", _stack(out.decoder_attentions), target, target),
        AttentionMap("cross", _stack(out.cross_attentions), target, source),
    ]
    return maps, tokenizer.decode(generated[0].tolist(), skip_special_tokens=True)


# --------------------------------------------------------------------------- files


def heatmap_files(amap: AttentionMap) -> list[tuple[str, np.ndarray, str]]:
    """(relative path, matrix, title) of every heatmap of a map: overall mean, each layer's
    mean over heads, each head."""
    layers, heads = amap.weights.shape[:2]
    frames = [
        (
            f"{amap.name}/mean.png",
            amap.weights.mean(axis=(0, 1)),
            f"{amap.title}: mean of {layers} layers x {heads} heads",
        )
    ]
    for layer in range(layers):
        frames.append(
            (
                f"{amap.name}/layer{layer}_mean.png",
                amap.weights[layer].mean(axis=0),
                f"{amap.title}: layer {layer}, mean of {heads} heads",
            )
        )
        frames += [
            (
                f"{amap.name}/layer{layer}_head{head}.png",
                amap.weights[layer, head],
                f"{amap.title}: layer {layer}, head {head}",
            )
            for head in range(heads)
        ]
    return frames


def _index_html(expl: Explanation) -> str:
    """A page with every heatmap: the overall mean large, then a layers x heads grid."""
    from lmforge.reports.html import CSS

    esc = html.escape
    parts = [
        f"<h1>Attention maps of {esc(expl.model)}</h1>",
        f"<p>{esc(expl.kind)} model. Input, as the model saw it:</p><pre>{esc(expl.source)}</pre>",
    ]
    if expl.output is not None:
        parts.append(f"<p>Generated output (greedy):</p><pre>{esc(expl.output)}</pre>")
    parts.append(
        "<p>Rows are queries (the token looking), columns keys (the tokens looked at); each "
        "row sums to 1. Layers and heads count from 0. Numbers: attentions.npz.</p>"
    )
    for amap in expl.maps:
        layers, heads = amap.weights.shape[:2]
        name = amap.name
        parts += [
            f'<h2 id="{name}">{esc(amap.title)}</h2>',
            f'<p><a href="{name}/mean.png"><img src="{name}/mean.png" alt="{esc(amap.title)} '
            'mean"></a></p>',
            "<table><tr><th>layer</th><th>mean of heads</th>"
            + "".join(f"<th>head {h}</th>" for h in range(heads))
            + "</tr>",
        ]
        for layer in range(layers):
            cells = [f"{name}/layer{layer}_mean.png"] + [
                f"{name}/layer{layer}_head{h}.png" for h in range(heads)
            ]
            parts.append(
                f"<tr><th>{layer}</th>"
                + "".join(
                    f'<td><a href="{c}"><img src="{c}" width="160" alt="{c}"></a></td>'
                    for c in cells
                )
                + "</tr>"
            )
        parts.append("</table>")
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>Attention maps: {esc(expl.model)}</title>\n<style>\n{CSS}\n"
        "td img { display: block; }\n</style>\n</head>\n<body>\n"
        + "\n".join(parts)
        + "\n</body>\n</html>\n"
    )


def _describe(tokens: Tokens) -> dict[str, Any]:
    return {"ids": tokens.ids, "texts": tokens.texts, "labels": tokens.labels}


def write_explanation(expl: Explanation, *, overwrite: bool = False) -> list[Path]:
    """Write heatmaps, index.html, attentions.npz and explain.json into ``expl.out_dir``."""
    from lmforge.reports.plots import write_heatmaps

    fonts = label_fonts()
    written: list[Path] = []
    with atomic_dir(expl.out_dir, overwrite=overwrite) as tmp:
        for amap in expl.maps:
            (tmp / amap.name).mkdir()
            _, rows, cols = MAPS[amap.name]
            frames = [(tmp / rel, matrix, title) for rel, matrix, title in heatmap_files(amap)]
            write_heatmaps(
                frames,
                amap.queries.labels,
                amap.keys.labels,
                row_title=rows,
                col_title=cols,
                fonts=fonts,
            )
            written += [expl.out_dir / path.relative_to(tmp) for path, _, _ in frames]
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **{m.name: m.weights.astype(np.float32) for m in expl.maps})
        with atomic_file(tmp / "attentions.npz", "wb") as handle:
            handle.write(buffer.getvalue())
        summary = {
            "model": expl.model,
            "kind": expl.kind,
            "source": expl.source,
            "output": expl.output,
            "maps": {
                m.name: {
                    "title": m.title,
                    "shape": {
                        "layers": m.weights.shape[0],
                        "heads": m.weights.shape[1],
                        "queries": m.weights.shape[2],
                        "keys": m.weights.shape[3],
                    },
                    "queries": _describe(m.queries),
                    "keys": _describe(m.keys),
                    "files": [rel for rel, _, _ in heatmap_files(m)],
                }
                for m in expl.maps
            },
            "warnings": expl.warnings,
        }
        write_json_atomic(tmp / "explain.json", summary)
        (tmp / "index.html").write_text(_index_html(expl), encoding="utf-8")
    return [expl.out_dir / "index.html", *written]


def explain(
    model_dir: str | Path,
    text: str,
    out_dir: str | Path,
    *,
    task: str | None = None,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    overwrite: bool = False,
    allow_pickle: bool = False,
) -> Explanation:
    """Attention maps of ``text`` (and the output generated from it) by the model in
    ``model_dir``, written to ``out_dir``."""
    from lmforge.generation import prompting_for, render_rows
    from lmforge.models import load_pretrained
    from lmforge.runs import read_model_card

    out_dir = Path(out_dir)
    if not text.strip():
        raise UserError("the input text is empty: give the text to explain")
    if max_new_tokens < 0:
        raise UserError(f"--max-new-tokens must be 0 or more, got {max_new_tokens}")
    refuse_to_overwrite(out_dir, overwrite)
    prompting = prompting_for(model_dir, task)
    model, tokenizer = load_pretrained(model_dir, allow_pickle=allow_pickle)
    try:
        kind = model_kind(model)
    except ValueError as exc:
        raise UserError(f"{model_dir}: {exc}") from None
    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # PEFT
    base.set_attn_implementation("eager")  # SDPA returns no attention weights
    card = read_model_card(model_dir) if Path(model_dir).is_dir() else {}
    if kind == "encoder":
        source = text
        budget = int(getattr(base.config, "max_position_embeddings", 512))
    else:
        from lmforge.data.templates import task_fields

        main = task_fields(prompting.task).source[0]
        source = render_rows([{main: text}], prompting, where="input")[0]
        budget = prompting.max_source_length
        positions = getattr(base.config, "max_position_embeddings", None)
        if kind == "causal" and positions is not None:
            budget = min(budget, positions - max_new_tokens)
            if budget < 1:
                raise UserError(
                    f"--max-new-tokens {max_new_tokens} leaves no room for the input: the "
                    f"model has {positions} positions"
                )
    prompt = _prompt_ids(model, tokenizer, source, kind, card, budget)
    warnings = []
    whole = len(_prompt_ids(model, tokenizer, source, kind, card, None))
    if whole > len(prompt):
        warnings.append(f"the input is {whole} tokens; the model reads {len(prompt)} of them")
    maps, output = attention_maps(model, tokenizer, prompt, max_new_tokens=max_new_tokens)
    labels = [label for m in maps for label in (*m.queries.labels, *m.keys.labels)]
    missing = missing_glyphs_warning(labels)
    if missing:
        warnings.append(missing)
    expl = Explanation(str(model_dir), kind, source, output, maps, out_dir, warnings)
    write_explanation(expl, overwrite=overwrite)
    return expl
