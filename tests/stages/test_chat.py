import pytest

from cola_ray.stages import chat
from tests import tinymodels


@pytest.fixture(scope="module")
def chat_model(tiny_llama, tmp_path_factory):
    return tinymodels.with_chat_template(tiny_llama, tmp_path_factory.mktemp("chat") / "model")


def test_both_record_styles_normalise_and_bad_ones_are_refused():
    sharegpt = [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]
    assert chat.normalize(sharegpt, "conversations") == [{"role": "user", "content": "hi"},
                                                         {"role": "assistant", "content": "hello"}]
    openai = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "x"}]
    assert chat.normalize(openai, "messages") == openai
    for bad in ([], "not json", {"role": "user"}, [{"role": "wizard", "content": "x"}], [{"role": "user", "content": 3}],
                ["a string turn"]):
        assert chat.normalize(bad, "messages") is None


def test_a_malformed_conversation_says_why():
    cases = {"not_a_list": "not json", "empty": [], "bad_turn": ["a string turn"],
             "unknown_role": [{"role": "wizard", "content": "x"}]}
    for code, value in cases.items():
        with pytest.raises(chat.BadConversation) as e:
            chat.parse(value, "messages")
        assert e.value.code == code and e.value.reason == f"bad_conversation:{code}"
    with pytest.raises(chat.BadConversation, match="unknown role 'wizard'"):
        chat.parse([{"role": "wizard", "content": "x"}], "messages")


def test_rendering_uses_the_template_and_passes_enable_thinking(chat_model):
    turns = [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "4"}]
    plain = chat.ChatRenderer(str(chat_model), 512).render(turns)
    assert plain == "<s>user\nWhat is 2+2?</s>\n<s>assistant\n4</s>\n"
    off = chat.ChatRenderer(str(chat_model), 512, enable_thinking=False).render(turns)
    assert off.endswith("<s>nothink</s>\n")
    assert chat.ChatRenderer(str(chat_model), 512, template="none").render(turns) == "user: What is 2+2?\n\nassistant: 4"


def test_a_long_conversation_splits_between_turns_each_part_a_conversation(chat_model):
    renderer = chat.ChatRenderer(str(chat_model), 96)
    turns = [{"role": "system", "content": "You answer questions."}]
    for i in range(8):
        turns += [{"role": "user", "content": f"Question {i}: what happens to river number {i} in spring?"},
                  {"role": "assistant", "content": f"River {i} floods the valley when the snow melts."}]
    parts = renderer.parts(turns)
    assert len(parts) > 1
    for text, part in parts:
        assert part[0]["role"] == "system" and part[1]["role"] == "user"  # system kept, starts at a user turn
        assert text == renderer.render(part) and renderer.length(text) <= 96
    assert [t for _, p in parts for t in p[1:]] == turns[1:]  # every turn once, in order


def test_auto_without_a_model_template_is_one_line(tiny_llama):
    from cola_ray.errors import UserError

    with pytest.raises(UserError, match="has no chat template; give --chat-template FILE"):
        chat.ChatRenderer(str(tiny_llama), 64).check("corpus/chat.jsonl", "messages")


def test_qa_records_compose_with_the_chat_template(chat_model):
    """--qa-chat: a Q&A record becomes a user turn (question, context) and an assistant turn
    (reasoning, answer) rendered by the chat template; the Q&A template's labels are not used.
    Without it the record renders through the Q&A template as plain text, as before."""
    import json

    import pyarrow as pa

    from cola_ray.stages.formatting import QAFormatter
    from cola_ray.stages.ingest import LabelDocuments

    batch = pa.table({"question": ["How many legs has a cat?"], "answer": ["Cats walk on four legs. #### 4"]})
    fmt = QAFormatter(source="qa")
    as_chat = LabelDocuments("qa", "text", fmt, qa_first=True, chat=chat.ChatRenderer(str(chat_model), 256, qa=True))
    row = as_chat(batch).to_pylist()[0]
    assert row["text"] == "<s>user\nHow many legs has a cat?</s>\n<s>assistant\nCats walk on four legs.\n\n4</s>\n"
    assert json.loads(row["messages"])[1] == {"role": "assistant", "content": "Cats walk on four legs.\n\n4"}
    plain = LabelDocuments("qa", "text", fmt, qa_first=True, chat=chat.ChatRenderer(str(chat_model), 256))(batch)
    assert plain.to_pylist()[0]["text"].startswith("Question: How many legs") and plain.to_pylist()[0]["messages"] is None


def test_a_file_mixing_both_conversation_styles_renders_each_record(tiny_llama):
    """OpenAI-style `messages` and ShareGPT `conversations` records (and plain text) in one
    batch: each record is read in its own style (a ShareGPT record was once an empty document)."""
    import json

    import pyarrow as pa

    from cola_ray.stages.ingest import LabelDocuments

    batch = pa.table({
        "text": [None, None, "a plain document"],
        "messages": [json.dumps([{"role": "user", "content": "hi"}]), None, None],
        "conversations": [None, json.dumps([{"from": "human", "value": "hello"}]), None]})
    label = LabelDocuments("mix", "text", chat=chat.ChatRenderer(str(tiny_llama), 64, template="none"))
    out = label(batch).to_pylist()
    assert [r["text"] for r in out] == ["user: hi", "user: hello", "a plain document"]
    assert [r["invalid"] for r in out] == ["", "", ""]
