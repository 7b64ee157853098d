"""The calibration set as llm-compressor consumes it: a `datasets.Dataset` of token ids.

oneshot uses a dataset that already has an `input_ids` column as given (no re-tokenization), so
the ids chosen upstream are exactly the ids the model sees. Truncation to max_seq_length happens
here, not inside llm-compressor, so the dataset is itself the record of what was calibrated on.
"""

from __future__ import annotations

from collections.abc import Sequence

from cola_ray.errors import UserError


def calibration_dataset(calibration: Sequence[Sequence[int]], vocab_size: int, max_seq_length: int | None = None):
    """Validate token-id lists and build the Dataset (input_ids + all-ones attention_mask)."""
    from datasets import Dataset

    if max_seq_length is not None and max_seq_length < 1:
        raise UserError(f"max_seq_length {max_seq_length}: expected a positive number of tokens")
    rows = [list(map(int, ids))[:max_seq_length] for ids in calibration]
    if not rows:
        raise UserError("calibration set is empty: this recipe needs calibration sequences")
    for i, ids in enumerate(rows):
        if not ids:
            raise UserError(f"calibration sequence {i} is empty")
        lo, hi = min(ids), max(ids)
        if lo < 0 or hi >= vocab_size:
            bad = lo if lo < 0 else hi
            raise UserError(f"calibration sequence {i}: token id {bad} is outside the model's vocabulary (0..{vocab_size - 1})")
    return Dataset.from_dict({"input_ids": rows, "attention_mask": [[1] * len(ids) for ids in rows]})
