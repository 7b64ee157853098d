"""Q&A records become one text with an explicit reasoning section; plain text passes through."""

from __future__ import annotations

import numpy as np
import pytest

from cola_ray.errors import UserError
from cola_ray.stages.formatting import QAFormatter, split_final_answer

GSM8K = {
    "question": "Natalia sold clips to 48 of her friends in April, and then she sold half as many "
                "clips in May. How many clips did Natalia sell altogether in April and May?",
    "answer": "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n"
              "Natalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.\n#### 72",
}


def test_gsm8k_answer_splits_into_reasoning_and_final_answer():
    text = QAFormatter().format_record(GSM8K)
    assert text == (
        f"Question: {GSM8K['question']}\n"
        "Reasoning: Natalia sold 48/2 = 24 clips in May.\n"
        "Natalia sold 48+24 = 72 clips altogether in April and May.\n"
        "Answer: 72")


def test_rationale_field_and_case_insensitive_detection():
    record = {"Problem": "what is 2 + 3 * 4?", "Rationale": "3 * 4 = 12 and 2 + 12 = 14",
              "correct": "c", "Solution": "14"}
    assert QAFormatter().format_record(record) == (
        "Question: what is 2 + 3 * 4?\nReasoning: 3 * 4 = 12 and 2 + 12 = 14\nAnswer: 14")


def test_instruction_input_output_and_no_reasoning_line_when_absent():
    record = {"instruction": "Translate to French.", "input": "Good morning", "output": "Bonjour"}
    assert QAFormatter().format_record(record) == (
        "Question: Translate to French.\nGood morning\nAnswer: Bonjour")
    record["input"] = ""
    assert QAFormatter().format_record(record) == "Question: Translate to French.\nAnswer: Bonjour"


def test_boxed_solution():
    record = {"problem": "Compute $\\frac{1}{2}+\\frac{1}{2}$.",
              "solution": "Adding halves gives $\\boxed{\\frac{2}{2}}$, i.e. 1."}
    text = QAFormatter().format_record(record)
    assert text.endswith("Answer: \\frac{2}{2}")
    assert "Reasoning: Adding halves gives" in text


def test_split_final_answer():
    assert split_final_answer("a\nb\n#### 1,000") == ("a\nb", "1,000")
    assert split_final_answer("x = \\boxed{3}") == ("x = \\boxed{3}", "3")
    assert split_final_answer("just 5") == ("", "just 5")
    assert split_final_answer("broken \\boxed{3") == ("", "broken \\boxed{3")


def test_plain_text_passes_through_unchanged():
    text = "  Some plain prose,\nwith its own layout.  "
    assert QAFormatter().format_record({"text": text, "id": 3}) == text


def test_custom_template_and_mapping_per_corpus():
    fmt = QAFormatter(template="Q: {question}\nWhy: {reasoning}\nA: {answer} [{source}]",
                      fields={"question": "query_text", "reasoning": "why", "answer": "gold"},
                      source="mycorpus")
    record = {"query_text": "2+2?", "why": "two pairs", "gold": "4", "source": "web"}
    assert fmt.format_record(record) == "Q: 2+2?\nWhy: two pairs\nA: 4 [web]"


def test_template_field_absent_is_user_error_naming_field_and_source():
    fmt = QAFormatter(template="Q: {question}\nHint: {hint}\nA: {answer}", source="gsm8k")
    with pytest.raises(UserError, match=r"source 'gsm8k'.*'hint'"):
        fmt.format_record(GSM8K)


def test_mapped_field_absent_is_user_error():
    fmt = QAFormatter(fields={"reasoning": "rationale"}, source="mathqa")
    with pytest.raises(UserError, match=r"source 'mathqa'.*'rationale'"):
        fmt.format_record(GSM8K)


def test_missing_answer_and_bad_config_are_user_errors():
    with pytest.raises(UserError, match="no answer"):
        QAFormatter().format_record({"question": "why?"})
    with pytest.raises(UserError, match="'hint_role'"):
        QAFormatter(fields={"hint_role": "x"})
    with pytest.raises(UserError, match="plain name"):
        QAFormatter(template="{0} {answer}")
    with pytest.raises(UserError, match="bad template"):
        QAFormatter(template="Q: {question")


def test_format_batch_on_numpy_columns_with_missing_values():
    batch = {
        "question": np.array(["q1", "q2", None], dtype=object),
        "answer": np.array(["r1 #### 1", "2", None], dtype=object),
        "text": np.array([None, None, "plain"], dtype=object),
        "id": np.arange(3),
    }
    assert QAFormatter().format_batch(batch) == [
        "Question: q1\nReasoning: r1\nAnswer: 1", "Question: q2\nAnswer: 2", "plain"]
    assert QAFormatter().format_batch({}) == []


def test_mixed_field_names_in_one_columnar_batch():
    """A batch holds every column; a record's own Q&A fields are the non-empty ones."""
    batch = {"question": ["q1", None], "answer": ["a1", None],
             "problem": [None, "solve 3x = 6"], "solution": [None, "x = \\boxed{2}"]}
    assert QAFormatter().format_batch(batch) == [
        "Question: q1\nAnswer: a1", "Question: solve 3x = 6\nReasoning: x = \\boxed{2}\nAnswer: 2"]


def test_check_columns_fails_before_reading_data():
    assert QAFormatter().check_columns(["question", "answer", "id"]) is True
    assert QAFormatter().check_columns(["text", "id"]) is False  # plain text passes through
    with pytest.raises(UserError, match="no answer field"):
        QAFormatter().check_columns(["question"])
    with pytest.raises(UserError, match=r"source 'gsm8k'.*template field 'hint'"):
        QAFormatter(template="Q: {question}\nHint: {hint}\nA: {answer}", source="gsm8k").check_columns(
            ["question", "answer"])
    with pytest.raises(UserError, match=r"'why' \(mapped to reasoning\)"):
        QAFormatter(fields={"reasoning": "why"}).check_columns(["question", "answer"])
