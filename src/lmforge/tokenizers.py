"""Train, save and load tokenizers: byte-level BPE or byte-level Unigram (HF ``tokenizers``).

**Round trip.** Both kinds split text with the ByteLevel pre-tokenizer (GPT-2's regex, no
prefix space) and map every UTF-8 byte to one of 256 printable characters, all of which are
always in the vocabulary. No normalizer runs and nothing is ever unknown, so
``tokenizer.decode(tokenizer.encode(text)) == text`` exactly for any string: Chinese, emoji,
characters never seen in training, tabs, newlines, runs of spaces. Unigram gets the same
guarantee by the same means rather than by SentencePiece-style ``byte_fallback`` over whole
characters, because the ``tokenizers`` Unigram trainer insists on a piece for every character
it saw, so a Chinese corpus with more distinct characters than ``vocab_size`` would not train.
Literal special-token text in the input (``"<extra_id_5>"``) becomes that special token; it
still round-trips unless decoding with ``skip_special_tokens=True``.

**Special tokens**, one tokenizer for every model family, at fixed ids: ``<pad>``=0,
``</s>``=1, ``<unk>``=2 (as in T5), ``<s>``=3, ``[CLS]``=4, ``[SEP]``=5, ``[MASK]``=6, then the
T5 sentinels ``<extra_id_0>``=7 ... ``<extra_id_{n-1}>``=6+n. Unlike T5 the sentinels count up
from a low id: look them up by name, never by ``len(tokenizer) - 1 - i``.

**Encoding adds no special tokens**: there is no post-processor, so ``tokenizer(text)`` gives
the text's tokens only. Objectives add eos / cls / sep themselves.

**Determinism.** BPE training is deterministic. The Unigram trainer is not quite: the
characters it keeps for coverage get scores in hash-set order, and its EM sums vary in the last
bits; :func:`_canonical_unigram` fixes the order, so the same texts give the same ids.
"""

from __future__ import annotations

import itertools
import json
import random
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from lmforge.errors import UserError
from lmforge.fsutil import atomic_dir

TokenizerKind = Literal["bpe", "unigram"]
KINDS: tuple[str, ...] = ("bpe", "unigram")

# Named special tokens in id order: pad=0, eos=1, unk=2, bos=3, cls=4, sep=5, mask=6.
SPECIAL_TOKENS: dict[str, str] = {
    "pad_token": "<pad>",
    "eos_token": "</s>",
    "unk_token": "<unk>",
    "bos_token": "<s>",
    "cls_token": "[CLS]",
    "sep_token": "[SEP]",
    "mask_token": "[MASK]",
}
BYTE_ALPHABET_SIZE = 256
DEFAULT_MODEL_MAX_LENGTH = 1_000_000  # above any model's context, so transformers never warns


def sentinel_tokens(n: int) -> list[str]:
    """T5's span-corruption sentinels ``<extra_id_0>`` ... ``<extra_id_{n-1}>``."""
    return [f"<extra_id_{i}>" for i in range(n)]


def min_vocab_size(num_sentinels: int = 100) -> int:
    """The smallest vocabulary that holds every byte and every special token."""
    return BYTE_ALPHABET_SIZE + len(SPECIAL_TOKENS) + num_sentinels


def train_tokenizer(
    texts: Iterable[str],
    *,
    kind: TokenizerKind,
    vocab_size: int,
    min_frequency: int = 2,
    num_sentinels: int = 100,
    max_texts: int | None = None,
    seed: int = 0,
    model_max_length: int = DEFAULT_MODEL_MAX_LENGTH,
    show_progress: bool = False,
) -> PreTrainedTokenizerFast:
    """Train a byte-level ``kind`` tokenizer on ``texts`` with lmforge's special tokens.

    ``vocab_size`` counts everything (bytes, special tokens, learned pieces); a small corpus may
    stop short of it. ``min_frequency`` is BPE's: a pair seen fewer times is never merged
    (Unigram has no such threshold; its EM prunes by likelihood). ``max_texts`` trains on a
    uniform random sample of that many texts, drawn with ``seed``.
    """
    if kind not in KINDS:
        raise UserError(f"unknown tokenizer kind {kind!r}; choose one of: {', '.join(KINDS)}")
    if num_sentinels < 0:
        raise UserError(f"num_sentinels must be 0 or more, got {num_sentinels}")
    smallest = min_vocab_size(num_sentinels)
    if vocab_size < smallest:
        raise UserError(
            f"vocab_size {vocab_size} is too small: a byte-level tokenizer needs at least "
            f"{smallest} ({BYTE_ALPHABET_SIZE} bytes + {smallest - BYTE_ALPHABET_SIZE} special "
            "tokens) plus room for learned pieces"
        )
    if min_frequency < 1:
        raise UserError(f"min_frequency must be 1 or more, got {min_frequency}")
    if max_texts is not None and max_texts < 1:
        raise UserError(f"max_texts must be 1 or more, got {max_texts}")

    special = [*SPECIAL_TOKENS.values(), *sentinel_tokens(num_sentinels)]
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    trainer: trainers.Trainer
    if kind == "bpe":
        backend = Tokenizer(models.BPE())
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            special_tokens=special,
            initial_alphabet=alphabet,
            show_progress=show_progress,
        )
    else:
        backend = Tokenizer(models.Unigram())
        trainer = trainers.UnigramTrainer(
            vocab_size=vocab_size,
            special_tokens=special,
            unk_token=SPECIAL_TOKENS["unk_token"],
            initial_alphabet=alphabet,
            show_progress=show_progress,
        )
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    backend.decoder = decoders.ByteLevel()

    nonempty = (text for text in texts if text)
    first = next(nonempty, None)
    if first is None:
        raise UserError("no text to train the tokenizer on (no texts, or all of them empty)")
    corpus: Iterable[str] = itertools.chain([first], nonempty)
    if max_texts is not None:
        corpus = _reservoir_sample(corpus, max_texts, seed)
    backend.train_from_iterator(corpus, trainer)
    if kind == "unigram":
        backend = _canonical_unigram(backend, len(special))

    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        **SPECIAL_TOKENS,
        extra_special_tokens=sentinel_tokens(num_sentinels),
        model_max_length=model_max_length,
        clean_up_tokenization_spaces=False,  # would turn "a ." into "a." on decode
    )


def _reservoir_sample(texts: Iterable[str], k: int, seed: int) -> list[str]:
    """A uniform random sample of ``k`` texts in one pass and O(k) memory.

    Written out (Algorithm R, Vitter 1985) because neither ``datasets`` (its shuffle buffer is
    not uniform) nor the standard library samples a stream of unknown length.
    """
    rng = random.Random(seed)
    sample: list[str] = []
    for i, text in enumerate(texts):
        if i < k:
            sample.append(text)
        else:
            j = rng.randrange(i + 1)
            if j < k:
                sample[j] = text
    return sample


def _canonical_unigram(backend: Tokenizer, num_special: int) -> Tokenizer:
    """Reorder a trained Unigram vocabulary so that the same texts always give the same ids.

    ``UnigramTrainer::finalize`` gives each character it must keep but the EM model dropped
    the score ``min_score + k * 1e-4``, with ``k`` in hash-set order, which differs from run to
    run; its EM sums also differ in the last bits. Here those fillers all get ``min_score``,
    scores are rounded to 1e-8, and pieces are sorted by (score desc, piece). Special tokens
    stay first, at their fixed ids.
    """
    state = json.loads(backend.to_str())
    vocab = state["model"]["vocab"]  # [[piece, score], ...], special tokens first
    special, pieces = vocab[:num_special], vocab[num_special:]
    floor = min(score for _, score in pieces)

    def canonical_score(piece: str, score: float) -> float:
        steps = (score - floor) / 1e-4
        filler = len(piece) == 1 and -1e-6 < steps < BYTE_ALPHABET_SIZE
        if filler and abs(steps - round(steps)) < 1e-6:
            return round(floor, 8)
        return round(score, 8)

    pieces = [[piece, canonical_score(piece, score)] for piece, score in pieces]
    pieces.sort(key=lambda item: (-item[1], item[0]))
    state["model"]["vocab"] = special + pieces
    return Tokenizer.from_str(json.dumps(state, ensure_ascii=False))


def save_tokenizer(
    tokenizer: PreTrainedTokenizerFast, path: str | Path, *, overwrite: bool = False
) -> Path:
    """Write ``tokenizer`` as a Transformers directory, atomically; refuse an existing ``path``
    unless ``overwrite``. ``AutoTokenizer.from_pretrained(path)`` loads it back."""
    path = Path(path)
    with atomic_dir(path, overwrite=overwrite) as tmp:
        tokenizer.save_pretrained(str(tmp))
    return path


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerFast:
    """Load a tokenizer directory (lmforge's or any Transformers one) from local files only."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"tokenizer directory {path} does not exist")
    if not path.is_dir():
        raise UserError(
            f"{path} is not a directory; expected a tokenizer directory "
            "(as written by `lmforge tokenizer train --out DIR`)"
        )
    if not any((path / name).is_file() for name in ("tokenizer.json", "tokenizer_config.json")):
        raise UserError(
            f"{path} has no tokenizer.json or tokenizer_config.json; "
            "train one with `lmforge tokenizer train --out DIR`"
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    # tokenizers reports a corrupt tokenizer.json as a bare Exception; any failure here is a
    # problem with the user's directory.
    except Exception as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"{path}: not a loadable tokenizer ({detail})") from None
    if not isinstance(tokenizer, PreTrainedTokenizerFast):
        raise UserError(
            f"{path}: loaded a {type(tokenizer).__name__}, which has no tokenizer.json; "
            "lmforge needs a fast (tokenizers-backed) tokenizer"
        )
    return tokenizer
