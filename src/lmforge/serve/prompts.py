"""A request's prompt -> the token ids the model sees, and the length limits on it.

* ``/v1/completions``: the prompt is the model's input as given, as OpenAI's completions are:
  a causal model continues the prompt's own tokens; a seq2seq model reads it as its source
  (its tokens + eos, as fine-tuning encoded sources). A list of token ids is used as it is.
* ``/v1/chat/completions``: a causal model whose tokenizer has a chat template, and that
  lmforge did not fine-tune, gets ``apply_chat_template`` with the generation prompt. Every
  other model (seq2seq ones, and models lmforge fine-tuned, whose card names the task
  template) gets the last message, which must be the user's, as the source text of its task
  template, as ``lmforge generate`` renders TEXT. Earlier messages are left out: lmforge's
  task templates are single-turn (source -> target), so a model fine-tuned on them never
  saw a conversation, and each user message is a new source for it.

Prompts are never cut: one longer than the limit is a 400, so a client never gets an
answer to a prompt it did not send.
"""

from __future__ import annotations

from pathlib import Path

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from lmforge.generation import Prompting, encode_prompt, prompting_for, render_rows
from lmforge.models import model_kind
from lmforge.runs import read_model_card
from lmforge.serve.schemas import APIError, ChatMessage

DEFAULT_MAX_PROMPT_TOKENS = 512
SFT_OBJECTIVES = {"seq2seq_sft", "causal_sft"}
UNCUT = 10**9  # encode_prompt cuts to a maximum; the limit is checked here instead


def conversation_text(messages: list[ChatMessage]) -> str:
    """The source text a conversation becomes for a model without a chat template: the last
    message, the user's (see the module's docstring)."""
    last = messages[-1]
    if last.role != "user":
        raise APIError(
            400,
            f"messages: the last message must be the user's, got {last.role!r} (this model "
            "answers one user message at a time)",
            param="messages",
        )
    return last.text


class PromptEncoder:
    """Encodes the prompts of one served model and checks them against its limits."""

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        model_dir: str | Path,
        *,
        task: str | None = None,
        max_prompt_tokens: int | None = None,
    ) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.kind = model_kind(model)
        card = read_model_card(model_dir) if Path(model_dir).is_dir() else {}
        self.prompting: Prompting = prompting_for(model_dir, task)
        self.fine_tuned = card.get("objective") in SFT_OBJECTIVES
        self.uses_chat_template = (
            self.kind == "causal"
            and bool(getattr(tokenizer, "chat_template", None))
            and not self.fine_tuned
        )
        self.max_prompt_tokens = max_prompt_tokens or (
            int(card["max_source_length"]) if "max_source_length" in card else None
        )
        self.max_prompt_tokens = self.max_prompt_tokens or DEFAULT_MAX_PROMPT_TOKENS
        # The longest answer the model was fine-tuned to give: a chat's default length.
        self.max_target_length: int | None = card.get("max_target_length")
        # Causal models: prompt + new tokens must fit the position embeddings.
        positions = getattr(model.config, "max_position_embeddings", None)
        self.context_length: int | None = positions if self.kind == "causal" else None

    def completion_ids(self, prompt: str | list[int], where: str = "prompt") -> list[int]:
        """The ids of one completions prompt (text, or token ids used as given)."""
        if isinstance(prompt, list):
            vocab = len(self.tokenizer)
            bad = [t for t in prompt if not 0 <= t < vocab]
            if bad:
                raise APIError(
                    400,
                    f"{where}: token id {bad[0]} is outside the vocabulary (0..{vocab - 1})",
                    param="prompt",
                )
            if not prompt:
                raise APIError(400, f"{where}: the token list is empty", param="prompt")
            return list(prompt)
        if self.kind == "causal" and not prompt:
            raise APIError(
                400, f"{where} is empty: a causal model needs text to continue", param="prompt"
            )
        return encode_prompt(self.model, self.tokenizer, prompt, UNCUT, raw=True)

    def chat_ids(self, messages: list[ChatMessage]) -> list[int]:
        """The ids of a conversation, ready for the assistant's answer."""
        if self.uses_chat_template:
            conversation = [{"role": m.role, "content": m.text} for m in messages]
            try:
                ids = self.tokenizer.apply_chat_template(
                    conversation, add_generation_prompt=True, tokenize=True, return_dict=False
                )
            except Exception as exc:  # a template can raise anything (jinja's raise_exception)
                raise APIError(
                    400,
                    f"messages: the model's chat template refused them: {exc}",
                    param="messages",
                ) from None
            return list(ids)
        text = conversation_text(messages)
        source = render_rows([{self._main_field(): text}], self.prompting, where="messages")[0]
        return encode_prompt(self.model, self.tokenizer, source, UNCUT)

    def _main_field(self) -> str:
        from lmforge.data.templates import task_fields

        return task_fields(self.prompting.task).source[0]

    def check_length(self, ids: list[int], max_tokens: int, where: str = "prompt") -> None:
        """A 400 (code ``context_length_exceeded``) when the prompt is over the limit."""
        if len(ids) > self.max_prompt_tokens:
            raise APIError(
                400,
                f"{where} has {len(ids)} tokens; this server takes at most "
                f"{self.max_prompt_tokens} (--max-prompt-tokens)",
                param="messages" if where == "messages" else "prompt",
                code="context_length_exceeded",
            )
        if self.context_length is not None and len(ids) + max_tokens > self.context_length:
            raise APIError(
                400,
                f"this model's maximum context length is {self.context_length} tokens; "
                f"{where} has {len(ids)} and max_tokens asks for {max_tokens} more",
                param="max_tokens",
                code="context_length_exceeded",
            )

    def room(self, ids: list[int], cap: int) -> int:
        """The default max_tokens of a chat answer: the least of the cap, the answer length
        the model was fine-tuned with, and what the context leaves."""
        limits = [cap, self.max_target_length or cap]
        if self.context_length is not None:
            limits.append(self.context_length - len(ids))
        return max(1, min(limits))
