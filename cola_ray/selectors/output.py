"""The calibration-set contract every selector writes: calibration.jsonl, one JSON object a line,
sorted by `cluster`, with exactly curate's keys in curate's order:

  id, text, source, num_tokens   the chunk (as chunked by curate)
  cluster      k-means cluster (cola) | selection rank, 0 = picked first (other selectors)
  distance     distance to the centroid (cola) | the selector's score, or null
               (random: the random key; lexical: marginal gain; perplexity: perplexity)
  cluster_size members of the cluster (cola) | null
  messages     only for a chunk rendered from a conversation (chat template): its turns

Floats are rounded to 1e-4 (curate does the same: forward-pass noise between batch shapes must
not make two runs' files differ).
"""

from __future__ import annotations

import json
import math

import pyarrow as pa

from cola_ray.models import calibration_token_ids  # noqa: F401  (part of this contract; lives with the tokenizer)

KEYS = ("id", "text", "source", "cluster", "distance", "num_tokens", "cluster_size")


def _float(v) -> float | None:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else round(float(v), 4)


def calibration_lines(selection: pa.Table, chunks: pa.Table) -> str:
    """selection (id, cluster, distance, cluster_size) + chunks (id, text, source, num_tokens)
    -> the text of calibration.jsonl."""
    names = ["id", "text", "source", "num_tokens", *(["messages"] if "messages" in chunks.column_names else [])]
    rows = {r["id"]: r for r in chunks.select(names).to_pylist()}
    ordered = selection.sort_by([("cluster", "ascending"), ("id", "ascending")]).to_pylist()
    lines = []
    for s in ordered:
        c = rows[s["id"]]
        row = {"id": s["id"], "text": c["text"], "source": c["source"], "cluster": int(s["cluster"]),
               "distance": _float(s["distance"]), "num_tokens": int(c["num_tokens"]),
               "cluster_size": None if s["cluster_size"] is None else int(s["cluster_size"])}
        if c.get("messages"):
            row["messages"] = json.loads(c["messages"])
        lines.append(json.dumps(row, ensure_ascii=False))
    return "\n".join(lines) + "\n"


def read_calibration(text: str) -> list[dict]:
    """Parse calibration.jsonl text (any selector's, or curate's) into rows."""
    return [json.loads(line) for line in text.splitlines() if line.strip()]


