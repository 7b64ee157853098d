"""Conversation corpora end to end and the hand-off files (issue 13)."""

import json
import re
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from cola_ray.cli import main
from tests import tinymodels
from tests.conftest import news_texts

README = Path(__file__).resolve().parents[2] / "README.md"


@pytest.fixture(scope="module")
def chat_run(ray_session, tiny_llama, tmp_path_factory):
    root = tmp_path_factory.mktemp("chat-run")
    model = tinymodels.with_chat_template(tiny_llama, root / "model")
    news = news_texts()
    with open(root / "ultrachat.jsonl", "w") as f:
        for i in range(8):
            f.write(json.dumps({"prompt": news[i][:60], "messages": [
                {"role": "user", "content": news[i][:120]}, {"role": "assistant", "content": news[i + 20][:150]}]}) + "\n")
        f.write(json.dumps({"messages": []}) + "\n")  # bad: empty
        f.write(json.dumps({"messages": [{"role": "wizard", "content": "x"}]}) + "\n")  # bad: unknown role
        f.write(json.dumps({"messages": "not a list"}) + "\n")  # bad: not a list
    with open(root / "sharegpt.jsonl", "w") as f:
        for i in range(8):
            f.write(json.dumps({"conversations": [{"from": "human", "value": news[i + 40][:120]},
                                                  {"from": "gpt", "value": news[i + 60][:150]}]}) + "\n")
    out = root / "out"
    args = ["curate", "--model", str(model), "--corpus", str(root / "ultrachat.jsonl"), "--corpus",
            str(root / "sharegpt.jsonl"), "--out", str(out), "--seq-len", "256", "--min-tokens", "8",
            "--num-samples", "6", "--proj-dim", "16", "--selector", "random", "--enable-thinking", "false"]
    assert main(args) == 0
    return model, out


SMALL = ["--seq-len", "256", "--min-tokens", "8", "--num-samples", "3", "--proj-dim", "8", "--selector", "random",
         "--near-dup-threshold", "0"]


def test_strict_stops_at_the_first_malformed_conversation(chat_run, tmp_path, capsys):
    model, out = chat_run
    corpus = out.parent / "ultrachat.jsonl"
    assert main(["curate", "--model", str(model), "--corpus", str(corpus), "--out", str(tmp_path / "o"), *SMALL,
                 "--strict"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("cola-ray: error: --corpus ") and "ultrachat.jsonl: a malformed conversation record: " in err
    assert "(--strict)" in err and not (tmp_path / "o" / "manifest.json").exists()


@pytest.mark.parametrize("template", ["none", "file"])
def test_chat_template_none_and_file(template, chat_run, tmp_path):
    """--chat-template none renders plain 'role: content' text; a Jinja FILE replaces the model's
    own template (and works for a model that has none)."""
    model, out = chat_run
    flag = "none"
    if template == "file":
        flag = str(tmp_path / "t.jinja")
        (tmp_path / "t.jinja").write_text("{% for m in messages %}[{{ m['role'] | upper }}] {{ m['content'] }}\n"
                                          "{% endfor %}")
    run = tmp_path / "o"
    assert main(["curate", "--model", str(model), "--corpus", str(out.parent / "sharegpt.jsonl"), "--out", str(run),
                 *SMALL, "--chat-template", flag]) == 0
    rows = [json.loads(x) for x in (run / "calibration.jsonl").read_text().splitlines()]
    assert len(rows) == 3
    head = "user: " if template == "none" else "[USER] "
    assert all(r["text"].startswith(head) and "<s>" not in r["text"] for r in rows)
    assert all(r["messages"][0]["content"] in r["text"] for r in rows)
    m = json.loads((run / "manifest.json").read_text())
    assert m["processing"]["chat"]["template"] == template


def test_conversations_render_with_the_template_and_keep_their_turns(chat_run):
    model, out = chat_run
    m = json.loads((out / "manifest.json").read_text())
    dropped = m["counts"]["dropped"]
    assert {k: v for k, v in dropped.items() if k.startswith("bad_conversation")} == {
        "bad_conversation:empty": 1, "bad_conversation:unknown_role": 1, "bad_conversation:not_a_list": 1}
    assert m["processing"]["chat"] == {"template": "model's own", "enable_thinking": False, "qa_as_chat": False}
    rows = [json.loads(x) for x in (out / "calibration.jsonl").read_text().splitlines()]
    assert len(rows) == 6
    for r in rows:
        assert r["text"].startswith("<s>user\n") and "nothink" in r["text"]  # the template, thinking off
        assert r["messages"][0]["role"] == "user"
        assert r["messages"][0]["content"] in r["text"]


def test_token_hand_off_is_exactly_the_text_tokenized(chat_run):
    """calibration.tokens.parquet and calibration/ hold the ids the model saw: tokenizing `text`
    with add_special_tokens=False gives exactly them (the template's own special tokens are in
    the text), none longer than --seq-len, and the manifest gives the length distribution."""
    import datasets
    from transformers import AutoTokenizer

    model, out = chat_run
    tok = AutoTokenizer.from_pretrained(model)
    rows = [json.loads(x) for x in (out / "calibration.jsonl").read_text().splitlines()]
    tokens = pq.read_table(out / "calibration.tokens.parquet").to_pylist()
    assert [t["id"] for t in tokens] == [r["id"] for r in rows]
    for r, t in zip(rows, tokens):
        assert t["input_ids"] == tok(r["text"], add_special_tokens=False)["input_ids"]
        assert t["attention_mask"] == [1] * len(t["input_ids"]) and len(t["input_ids"]) <= 256
    ds = datasets.load_from_disk(str(out / "calibration"))
    assert ds["input_ids"] == [t["input_ids"] for t in tokens] and ds["text"] == [r["text"] for r in rows]
    lengths = json.loads((out / "manifest.json").read_text())["selection"]["tokens"]
    assert lengths["max"] == max(len(t["input_ids"]) for t in tokens) <= lengths["seq_len"] == 256


def _snippet(marker: str) -> str:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    return next(b for b in blocks if marker in b)


def test_readme_llm_compressor_snippet_runs(chat_run, tmp_path, monkeypatch):
    """The README's llm-compressor snippet, as written, on this run's hand-off folder."""
    model, out = chat_run
    code = _snippet("from llmcompressor import oneshot")
    code = re.sub(r'^MODEL = .*$', f'MODEL = "{model}"', code, flags=re.M)
    code = re.sub(r'^OUT = .*$', f'OUT = "{out}"', code, flags=re.M)
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)  # noqa: S102 - the documented snippet itself
    assert scope["model"] is not None


def test_readme_gptqmodel_format(chat_run):
    """GPTQModel is not installed here (only its source distribution, which builds compiled
    kernels, is in this machine's index): the snippet's data step is checked, the list of
    {input_ids, attention_mask} its quantize() documents."""
    _, out = chat_run
    code = _snippet("GPTQModel").split("# --- quantize")[0]
    code = re.sub(r'^OUT = .*$', f'OUT = "{out}"', code, flags=re.M)
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)  # noqa: S102
    calib = scope["calibration"]
    assert calib and all(set(c) == {"input_ids", "attention_mask"} and all(isinstance(i, int) for i in c["input_ids"])
                         for c in calib)
