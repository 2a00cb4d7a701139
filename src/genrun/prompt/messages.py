"""Turn the prompt shapes users and the reference send into OpenAI-style chat messages."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from genrun.backend.base import Messages
from genrun.errors import RowError

ROLES = ("system", "user", "assistant", "tool")


def prompt_text(prompt: Any) -> str:
    """The text of one prompt: a string, {"role", "content"}, {"content": {"text"}} or {"text"}."""
    text = prompt
    if isinstance(prompt, Mapping):
        if "content" in prompt:
            text = prompt["content"]
            if isinstance(text, Mapping):  # the reference's prompt server: {"content": {"text": ...}}
                text = text.get("text")
        elif "text" in prompt:
            text = prompt["text"]
        else:
            raise RowError(f"prompt has neither 'content' nor 'text' (keys: {sorted(prompt)})")
    if not isinstance(text, str):
        raise RowError(f"prompt must be text, got {type(text).__name__}")
    if not text.strip():
        raise RowError("empty prompt")
    return text


def with_system(messages: Messages, system_prompt: str | None) -> Messages:
    """Put a non-empty system prompt first, as the reference does."""
    if system_prompt:
        return [{"role": "system", "content": system_prompt}, *messages]
    return messages


def prompt_messages(prompt: Any, system_prompt: str | None = "") -> Messages:
    """One prompt as a single user turn (keeping a dict's role when it has one)."""
    if type(prompt) is str:  # most rows: no Mapping checks (each an ABC lookup)
        if not prompt.strip():
            raise RowError("empty prompt")
        return with_system([{"role": "user", "content": prompt}], system_prompt)
    role = prompt.get("role", "user") if isinstance(prompt, Mapping) else "user"
    if role not in ROLES:
        raise RowError(f"unknown role {role!r} (expected one of {', '.join(ROLES)})")
    return with_system([{"role": role, "content": prompt_text(prompt)}], system_prompt)


def conversation_messages(turns: Any, system_prompt: str | None = "", beside_own: bool = False) -> Messages:
    """A multi-turn conversation, checked turn by turn so a malformed row names its problem.
    A conversation's own system turn wins over the run's system prompt; beside_own (the API, as
    the page says and UltraRAG's server does) sends both, the system prompt first."""
    if not isinstance(turns, Sequence) or isinstance(turns, (str, bytes)):
        raise RowError(f"messages must be a list of {{'role', 'content'}} turns, got {type(turns).__name__}")
    if not turns:
        raise RowError("messages is an empty list")
    messages: Messages = []
    for i, turn in enumerate(turns):
        if not isinstance(turn, Mapping):
            raise RowError(f"turn {i} is {type(turn).__name__}, not a {{'role', 'content'}} dict")
        role = turn.get("role")
        if role not in ROLES:
            raise RowError(f"turn {i} has unknown role {role!r} (expected one of {', '.join(ROLES)})")
        content = turn.get("content")
        if content is None or (isinstance(content, str) and not content.strip() and role == "user"):
            raise RowError(f"turn {i} ({role}) has no content")
        if not isinstance(content, (str, list)):
            content = prompt_text(turn)
        messages.append({"role": role, "content": content})
    if system_prompt and messages[0]["role"] == "system" and not beside_own:
        return messages  # the conversation's own system turn wins over the global one
    return with_system(messages, system_prompt)


def multimodal_messages(
    prompt: Any,
    images: Any,
    system_prompt: str | None = "",
    image_tag: str | None = None,
    base_dir: str | None = None,
    policy: Any = None,
    images_first: bool = False,
) -> Messages:
    """One prompt with its images as OpenAI-style content parts.

    With image_tag, each tag in the text is replaced by the next image, in order; without it,
    the images follow the text (the page's "appended to the end"), or come before it with
    images_first (UltraRAG's own server). Local files and in-memory images become data URLs, checked
    here so a bad image fails only its own row; http(s) and data URLs pass through.
    """
    from genrun.prompt.images import ImagePolicy, image_list, image_url

    text = prompt_text(prompt)
    role = prompt.get("role", "user") if isinstance(prompt, Mapping) else "user"
    urls = [image_url(image, base_dir, policy or ImagePolicy()) for image in image_list(images)]
    image_parts = [{"type": "image_url", "image_url": {"url": url}} for url in urls]
    if not image_tag:
        text_part = {"type": "text", "text": text}
        parts = [*image_parts, text_part] if images_first else [text_part, *image_parts]
    else:
        pieces = text.split(image_tag)
        if len(pieces) - 1 != len(image_parts):
            raise RowError(f"the prompt has {len(pieces) - 1} {image_tag!r} tags but {len(image_parts)} images")
        parts = []
        for piece, image in zip(pieces, [*image_parts, None]):
            if piece:
                parts.append({"type": "text", "text": piece})
            if image is not None:
                parts.append(image)
    return with_system([{"role": role, "content": parts}], system_prompt)
