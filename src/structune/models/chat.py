"""The one function that turns chat messages into model text.

Training and inference both render through `render_chat`, so a tuned model sees at
inference exactly the text it was trained on: the most common reason exported
fine-tunes "forget" their format is a template that differs between the two.
transformers renders templates in a sandboxed Jinja environment (a template comes with the
model and is untrusted code); a template that fails or tries to escape the sandbox raises
a `UserError` naming the tokenizer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from structune.errors import UserError
from structune.llms.base import Message


def render_chat(tokenizer: Any, messages: Sequence[Message], *, add_generation_prompt: bool) -> str:
    """Render `messages` with the tokenizer's chat template.

    Args:
        tokenizer: a transformers tokenizer that carries a chat template.
        messages: the conversation.
        add_generation_prompt: end with the header of an assistant turn (for inference, and
            for the prompt part of a training example).
    """
    if not getattr(tokenizer, "chat_template", None):
        raise UserError(
            "this tokenizer has no chat template; structune needs a chat (instruct) model"
        )
    import jinja2

    try:
        text: str = tokenizer.apply_chat_template(
            list(messages), tokenize=False, add_generation_prompt=add_generation_prompt
        )
    except jinja2.TemplateError as exc:  # SecurityError included: a sandbox escape attempt
        source = getattr(tokenizer, "name_or_path", "") or "this tokenizer"
        raise UserError(
            f"the chat template of {source} failed to render: {type(exc).__name__}: {exc}; "
            "check tokenizer_config.json / chat_template.jinja, or use another model"
        ) from None
    return text
