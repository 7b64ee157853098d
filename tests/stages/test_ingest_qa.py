"""Ingest renders Q&A records through the renderer the workflow hands it, and checks the
mapping and template against the first record before anything is read."""

import json

import pytest

from cola_ray.errors import UserError
from cola_ray.stages import ingest
from cola_ray.stages.formatting import QAFormatter

RECORDS = [{"question": "What is 6 * 7?", "answer": "Six sevens are 42.\n#### 42"},
           {"problem": "Solve x + 1 = 3.", "solution": "Subtract one: $x = \\boxed{2}$."}]


def _jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_qa_records_without_text_field_are_rendered(ray_session, tmp_path):
    files = ingest.discover([str(_jsonl(tmp_path / "qa.jsonl", RECORDS))])
    fmt = {"qa": QAFormatter(source="qa")}
    ingest.validate(files, "text", fmt)
    texts = sorted(r["text"] for r in ingest.read_documents(files, "text", formatters=fmt).take_all())
    assert texts == ["Question: Solve x + 1 = 3.\nReasoning: Subtract one: $x = \\boxed{2}$.\nAnswer: 2",
                     "Question: What is 6 * 7?\nReasoning: Six sevens are 42.\nAnswer: 42"]


def test_qa_first_renders_records_that_also_have_text(ray_session, tmp_path):
    files = ingest.discover([str(_jsonl(tmp_path / "both.jsonl", [dict(RECORDS[0], text="raw")]))])
    fmt = {"both": QAFormatter(source="both")}
    plain = ingest.read_documents(files, "text", formatters=fmt).take_all()
    rendered = ingest.read_documents(files, "text", formatters=fmt, qa_first={"both"}).take_all()
    assert plain[0]["text"] == "raw" and rendered[0]["text"].startswith("Question: What is 6 * 7?")


def test_bad_mapping_or_template_fails_at_validation(tmp_path):
    files = ingest.discover([str(_jsonl(tmp_path / "qa.jsonl", RECORDS[:1]))])
    with pytest.raises(UserError, match=r"qa\.jsonl: source 'qa': template field 'hint' not in records"):
        ingest.validate(files, "text", {"qa": QAFormatter("Q: {question}\nH: {hint}\nA: {answer}", source="qa")})
    with pytest.raises(UserError, match=r"'why' \(mapped to reasoning\)"):
        ingest.validate(files, "text", {"qa": QAFormatter(fields={"reasoning": "why"}, source="qa")})
    other = ingest.discover([str(_jsonl(tmp_path / "other.jsonl", [{"body": "x"}]))])
    with pytest.raises(UserError, match=r"--probes code=.*other\.jsonl: no field 'text'"):
        ingest.validate(other, "text", {"other": QAFormatter(source="other")}, flag="--probes code=")
