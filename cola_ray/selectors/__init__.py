"""Calibration selectors: cola, random, random-stratified, lexical, perplexity(-low/-high), and the
compressor-aware moment-match, outlier-coverage and cluster-herding.

All take the same candidate pool (a curate run's embedded chunks) and write the same
calibration.jsonl layout (`output.py`), so `cola-ray curate --selector NAME` and the sweep
treat them alike. Importing this package costs no torch: models load inside selectors.
"""

from cola_ray.selectors.output import KEYS, calibration_lines, calibration_token_ids, read_calibration
from cola_ray.selectors.registry import (SELECTORS, Pool, Selection, Selector, SelectorContext, get_selector,
                                         list_selectors, register_selector)

__all__ = [
    "KEYS",
    "SELECTORS",
    "Pool",
    "Selection",
    "Selector",
    "SelectorContext",
    "calibration_lines",
    "calibration_token_ids",
    "get_selector",
    "list_selectors",
    "read_calibration",
    "register_selector",
]
