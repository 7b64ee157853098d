"""The calibration set in the forms compressors take without re-tokenizing (issue 13).

Beside calibration.jsonl every selection writes:
  calibration.tokens.parquet  id, input_ids, attention_mask: exactly the ids the activation pass
                              fed the model (models.calibration_token_ids: the tokenizer's BOS
                              once, a chat template's special tokens as rendered), cut to --seq-len
  calibration/                a `datasets` folder (save_to_disk) with id, text, source, input_ids,
                              attention_mask: `datasets.load_from_disk` gives llm-compressor's
                              `oneshot(dataset=...)` a tokenized dataset, and GPTQModel /
                              AutoAWQ-style tools a list of {input_ids, attention_mask}
and returns the selected set's token-length distribution for the manifest.
"""

from __future__ import annotations

import os
import tempfile

import numpy as np
import pyarrow as pa

from cola_ray import storage

TOKENS = "calibration.tokens.parquet"
DATASET = "calibration"


def write_handoff(out: str, model: str, seq_len: int, rows: list[dict]) -> tuple[list[str], dict]:
    """`rows`: the calibration.jsonl rows (id, text, source). Returns (artifact names, lengths)."""
    import datasets

    from cola_ray.models import calibration_token_ids, load_tokenizer

    ids = calibration_token_ids([r["text"] for r in rows], load_tokenizer(model), seq_len)
    columns = {"id": [r["id"] for r in rows], "text": [r["text"] for r in rows],
               "source": [r["source"] for r in rows],
               "input_ids": ids, "attention_mask": [[1] * len(x) for x in ids]}
    storage.write_parquet(storage.join(out, TOKENS), pa.table({
        "id": columns["id"], "input_ids": pa.array(ids, pa.list_(pa.int32())),
        "attention_mask": pa.array(columns["attention_mask"], pa.list_(pa.int8()))}))
    folder = storage.join(out, DATASET)
    storage.delete(folder)
    shown = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()  # a bar for k rows would only clutter the end-of-run summary
    try:
        with tempfile.TemporaryDirectory() as tmp:  # datasets writes locally; storage copies (local or S3)
            datasets.Dataset.from_dict(columns).save_to_disk(tmp)
            for name in sorted(os.listdir(tmp)):
                with open(os.path.join(tmp, name), "rb") as f:
                    storage.write_bytes(storage.join(folder, name), f.read())
    finally:
        if shown:
            datasets.enable_progress_bars()
    return [TOKENS, DATASET + "/"], lengths([len(x) for x in ids], seq_len)


def lengths(n: list[int], seq_len: int) -> dict:
    """Token-length distribution of a calibration set (what a length guard checks)."""
    a = np.asarray(n or [0])
    return {"min": int(a.min()), "p10": int(np.percentile(a, 10)), "median": int(np.median(a)),
            "p90": int(np.percentile(a, 90)), "max": int(a.max()), "total": int(a.sum()), "seq_len": seq_len}
