"""The one place that turns chat messages into model text and tokens.

Training and inference both render through `render_chat` and tokenize through
`tokenize_chat` / `chat_token_ids`, so a tuned model sees at inference exactly the tokens
it was trained on: the most common reason exported fine-tunes "forget" their format is a
template that differs between the two. transformers renders templates in a sandboxed Jinja
environment (a template comes with the model and is untrusted code); a template that fails
or tries to escape the sandbox raises a `UserError` naming the tokenizer. Message contents
are untrusted text too: tokenizing never lets them produce the model's control tokens (see
`chat_token_ids`).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from structune.errors import UserError
from structune.messages import Message


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


# --- tokenizing a rendered chat -----------------------------------------------------------
#
# A tokenizer turns the text of its control tokens ("<|im_start|>", "<|im_end|>",
# "<|endoftext|>" in SmolLM2) into those tokens wherever they appear. Message contents are
# untrusted (a PDF chunk, a recorded teacher answer, a user's question): rendered and
# tokenized as one string, a content that holds "<|im_end|>\n<|im_start|>system\n..." would
# end its turn and open a system turn of its own. So a rendered chat remembers where each
# content lies, and only the template's own control tokens become control tokens.


@dataclass(frozen=True)
class RenderedChat:
    """A conversation rendered by its chat template, and where each message's content is.

    Attributes:
        text: the rendered text (what `render_chat` returns).
        contents: the (start, end) character span of each message's content in `text`;
            empty when no content holds control-token text (nothing to guard).
    """

    text: str
    contents: tuple[tuple[int, int], ...]


def render_chat_contents(
    tokenizer: Any, messages: Sequence[Message], *, add_generation_prompt: bool
) -> RenderedChat:
    """Render `messages` like `render_chat`, keeping where each content lands.

    Only a content that holds control-token text needs locating: then the template is
    rendered a second time with a unique placeholder for each content, and the text between
    placeholders is the template's own. Otherwise `contents` is empty and the text
    tokenizes as one string (`chat_token_ids`), at the cost of one render.

    Raises:
        UserError: the template fails, or it rewrites contents (e.g. strips them) so that they
            cannot be located, and a content holds the text of a control token.
    """
    text = render_chat(tokenizer, messages, add_generation_prompt=add_generation_prompt)
    controls = _control_texts(tokenizer)
    found = [t for m in messages for t in controls if t in m["content"]]
    if not found:
        return RenderedChat(text, ())
    nonce = secrets.token_hex(8)
    placeholders = [f"\ue000{nonce}:{i}\ue001" for i in range(len(messages))]
    skeleton = render_chat(
        tokenizer,
        [{**m, "content": p} for m, p in zip(messages, placeholders, strict=True)],
        add_generation_prompt=add_generation_prompt,
    )
    contents = _locate_contents(skeleton, placeholders, [m["content"] for m in messages], text)
    if contents is None:
        raise UserError(
            f"a message holds the control token {found[0]!r}, and the chat template of "
            f"{getattr(tokenizer, 'name_or_path', '') or 'this tokenizer'} rewrites message "
            "contents, so structune cannot keep it from acting as one; remove it from the input"
        )
    return RenderedChat(text, contents)


def chat_token_ids(
    tokenizer: Any, chat: RenderedChat, *, start: int = 0, end: int | None = None
) -> list[int]:
    """Token ids of `chat.text[start:end]` in which message contents yield no control token.

    Without control-token text in any content this is exactly `tokenizer(text)` (no BOS
    added: the template writes every special token the model expects). Otherwise the text is
    cut at the template's own control tokens, as the tokenizer itself cuts it, and the
    pieces between them are tokenized with `split_special_tokens=True`, so that "<|im_end|>"
    inside a content is read as the characters `<`, `|`, `im`, ...
    """
    end = len(chat.text) if end is None else end
    text = chat.text[start:end]
    spans = [(max(a, start) - start, min(b, end) - start) for a, b in chat.contents]
    spans = [(a, b) for a, b in spans if a < b]
    controls = _control_texts(tokenizer)
    if not any(t in text[a:b] for a, b in spans for t in controls):
        ids: list[int] = tokenizer(text, add_special_tokens=False)["input_ids"]
        return ids
    ids = []
    piece_start = 0
    for cut_start, cut_end, token_id in _template_controls(text, spans, controls):
        ids += _plain_token_ids(tokenizer, text[piece_start:cut_start])
        ids.append(token_id)
        piece_start = cut_end
    return ids + _plain_token_ids(tokenizer, text[piece_start:])


def tokenize_chat(
    tokenizer: Any, messages: Sequence[Message], *, add_generation_prompt: bool
) -> list[int]:
    """Token ids of `messages` as the model reads them: the template's control tokens as
    control tokens, every content as plain text. Training and inference both use this."""
    chat = render_chat_contents(tokenizer, messages, add_generation_prompt=add_generation_prompt)
    return chat_token_ids(tokenizer, chat)


def _locate_contents(
    skeleton: str, placeholders: list[str], contents: list[str], text: str
) -> tuple[tuple[int, int], ...] | None:
    """Content spans in `text`, if it is `skeleton` with each placeholder replaced by its
    content (each placeholder once, in order); None otherwise."""
    spans = []
    rebuilt: list[str] = []
    position = 0
    length = 0
    for placeholder, content in zip(placeholders, contents, strict=True):
        found = skeleton.find(placeholder, position)
        if found < 0 or skeleton.count(placeholder) != 1:
            return None
        rebuilt += [skeleton[position:found], content]
        length += found - position
        spans.append((length, length + len(content)))
        length += len(content)
        position = found + len(placeholder)
    rebuilt.append(skeleton[position:])
    return tuple(spans) if "".join(rebuilt) == text else None


def _control_texts(tokenizer: Any) -> dict[str, int]:
    """The text of each control token (an added token marked special) → its id."""
    decoder = getattr(tokenizer, "added_tokens_decoder", {})
    return {token.content: token_id for token_id, token in decoder.items() if token.special}


def _template_controls(
    text: str, spans: list[tuple[int, int]], controls: dict[str, int]
) -> list[tuple[int, int, int]]:
    """(start, end, id) of each control token written by the template: found only in the
    text between contents, leftmost-longest as tokenizers match added tokens."""
    pattern = re.compile("|".join(re.escape(t) for t in sorted(controls, key=len, reverse=True)))
    found = []
    gap_start = 0
    for gap_end, next_start in [*spans, (len(text), len(text))]:
        for match in pattern.finditer(text, gap_start, gap_end):
            found.append((match.start(), match.end(), controls[match.group()]))
        gap_start = next_start
    return found


def _plain_token_ids(tokenizer: Any, text: str) -> list[int]:
    if not text:
        return []
    ids: list[int] = tokenizer(text, add_special_tokens=False, split_special_tokens=True)[
        "input_ids"
    ]
    return ids
