"""Conversation records -> documents rendered with the model's chat template (issue 13).

A record with `messages` (a list of {role, content}: OpenAI / ultrachat style) or
`conversations` (a list of {from, value}: ShareGPT style) is a conversation. It is rendered by
the tokenizer's `apply_chat_template` (the model's own template, or a Jinja file), with
`enable_thinking` passed to templates that read it, so the text calibrated on is what the
deployed model sees: special tokens of the template included. Why this matters: a model
calibrated on chat data rendered with thinking on (or with no template) behaves differently in
the mode it is deployed in (llm-compressor #2680 / #2681).

A conversation whose rendering is longer than `seq_len` tokens is split *between turns*: at the
start of a user turn (so strict templates that require user/assistant alternation still render),
every part repeating the system message, each part rendered as a valid conversation of its own.
A single exchange longer than seq_len stays one part, and stage 2 splits its text at paragraph
boundaries like any document (the only case where a chunk is not a whole conversation).

Bad conversations are documents without text, dropped and counted by reason:
`bad_conversation:not_a_list`, `:empty`, `:bad_turn` (a turn that is not {role, content}
strings), `:unknown_role`, `:template_error` (the template refuses the turns). With `strict`
(--strict) the first one stops the run with one line naming the file and the reason instead.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from typing import Any

from cola_ray.errors import UserError

FIELDS = {"messages": ("role", "content"), "conversations": ("from", "value")}
ROLES = {"system": "system", "user": "user", "human": "user", "assistant": "assistant", "gpt": "assistant",
         "model": "assistant", "bot": "assistant", "tool": "tool", "function": "tool", "ipython": "tool"}
BAD = "bad_conversation"


def conversation_field(columns) -> str | None:
    """The conversation field of records with these columns, if any."""
    return next((f for f in FIELDS if f in columns), None)


class BadConversation(ValueError):
    """A malformed conversation record: `code` is its drop reason's suffix (`bad_conversation:<code>`)."""

    def __init__(self, code: str, detail: str):
        super().__init__(detail)
        self.code = code

    @property
    def reason(self) -> str:
        return f"{BAD}:{self.code}"


def parse(value: Any, field: str) -> list[dict]:
    """A record's turns as [{role, content}] with canonical roles; BadConversation says why not."""
    role_key, content_key = FIELDS[field]
    if isinstance(value, str):  # some exports store the list as a JSON string
        try:
            value = json.loads(value)
        except ValueError:
            raise BadConversation("not_a_list", f"{field!r} is a string that is not a JSON list") from None
    if not isinstance(value, list):
        raise BadConversation("not_a_list", f"{field!r} is a {type(value).__name__}, not a list of turns")
    if not value:
        raise BadConversation("empty", f"{field!r} is an empty conversation")
    turns = []
    for n, turn in enumerate(value):
        if not isinstance(turn, dict):
            raise BadConversation("bad_turn", f"{field!r} turn {n} is a {type(turn).__name__}, not an object")
        role, content = turn.get(role_key, turn.get("role")), turn.get(content_key, turn.get("content"))
        if not isinstance(role, str) or role.lower() not in ROLES:
            raise BadConversation("unknown_role", f"{field!r} turn {n} has an unknown role {role!r} "
                                  f"(known: {', '.join(sorted(ROLES))})")
        if not isinstance(content, str):
            raise BadConversation("bad_turn", f"{field!r} turn {n}: {content_key!r} is not a string")
        turns.append({"role": ROLES[role.lower()], "content": content})
    return turns


def normalize(value: Any, field: str) -> list[dict] | None:
    """parse(), or None when malformed."""
    try:
        return parse(value, field)
    except BadConversation:
        return None


@functools.lru_cache(maxsize=4)
def _tokenizer(model: str):
    from cola_ray.models import load_tokenizer

    return load_tokenizer(model)


@dataclass(frozen=True)
class ChatRenderer:
    """Renders conversations for one model. `template`: Jinja text, None for the model's own,
    "none" for a plain "role: content" rendering without special tokens; `enable_thinking`:
    passed to the template when not None. Small and picklable: the tokenizer loads once per
    worker process."""

    model: str
    seq_len: int
    template: str | None = None
    enable_thinking: bool | None = None
    qa: bool = False  # also render Q&A records as conversations (formatting.QAFormatter.turns_batch)
    strict: bool = False  # a malformed conversation stops the run (ingest) instead of being counted

    @property
    def tokenizer(self):
        return _tokenizer(self.model)

    def check(self, corpus_uri: str, field: str) -> None:
        """The model's own template (`auto`) must exist once a conversation corpus is read."""
        if self.template is None and not getattr(self.tokenizer, "chat_template", None):
            what = "Q&A records to render as chat (--qa-chat)" if field == "Q&A" else f"conversations ({field!r})"
            raise UserError(f"--corpus {corpus_uri}: holds {what} but {self.model} has no chat "
                            "template; give --chat-template FILE (a Jinja template) or --chat-template none")

    def render(self, turns: list[dict]) -> str:
        if self.template == "none":
            return "\n\n".join(f"{t['role']}: {t['content']}" for t in turns)
        extra = {} if self.enable_thinking is None else {"enable_thinking": self.enable_thinking}
        return self.tokenizer.apply_chat_template(turns, chat_template=self.template, tokenize=False, **extra)

    def length(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def parts(self, turns: list[dict]) -> list[tuple[str, list[dict]]]:
        """(rendered text, turns) of each part; BadConversation when the template refuses."""
        try:
            whole = self.render(turns)
            if self.length(whole) <= self.seq_len:
                return [(whole, turns)]
            system = [t for t in turns[:1] if t["role"] == "system"]
            blocks: list[list[dict]] = []
            for t in turns[len(system):]:
                if t["role"] == "user" or not blocks:
                    blocks.append([])
                blocks[-1].append(t)
            parts: list[list[dict]] = []
            for block in blocks:
                if parts and self.length(self.render(system + parts[-1] + block)) <= self.seq_len:
                    parts[-1] = parts[-1] + block
                else:
                    parts.append(block)
            return [(self.render(system + p), system + p) for p in parts]
        except Exception as e:  # noqa: BLE001 - jinja's TemplateError and whatever a template raises
            raise BadConversation("template_error", "the chat template refuses it: "
                                  + (str(e).splitlines()[0] if str(e) else type(e).__name__)) from None


def resolve_template(choice: str) -> str | None:
    """--chat-template auto|none|FILE -> what ChatRenderer takes (None: the model's own)."""
    if choice in ("auto", "none"):
        return None if choice == "auto" else "none"
    from cola_ray import storage

    try:
        return storage.read_bytes(choice).decode("utf-8")
    except Exception as e:  # noqa: BLE001
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(f"--chat-template {choice}: not 'auto', 'none' or a readable Jinja file ({reason})") from None
