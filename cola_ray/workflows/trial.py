"""One sweep trial: a calibration set -> compress the model with one recipe -> evaluate it.

Runs inside a Ray Tune trial process (`tune_trainable`), or in-process (`run_trial`, for tests
and debugging). The trial writes its own result JSON to `<out>/trials/<key>.json`, whatever
happens: status "ok" with scores and timings, or status "failed" with the error. That file,
not Tune's experiment state, is the sweep's record (see sweep.py for why).

The "dense" trial evaluates the uncompressed model once per sweep: the reference for retention.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import tempfile
import time
import traceback
from collections import Counter

from cola_ray import storage
from cola_ray.errors import UserError
from cola_ray.selectors import calibration_token_ids, read_calibration
from cola_ray.workflows.common import RunClock


def token_digest(token_lists: list[list[int]]) -> str:
    """sha256 of the exact token ids handed to the compressor (in order)."""
    return hashlib.sha256(json.dumps(token_lists, separators=(",", ":")).encode()).hexdigest()


def calibration_file(uri: str) -> str:
    """The calibration.jsonl of a set given as a folder (a curate output) or as the file itself."""
    path = uri if uri.endswith(".jsonl") else storage.join(uri, "calibration.jsonl")
    if not storage.exists(path):
        raise UserError(f"calibration set {uri}: no calibration.jsonl there")
    return path


def load_calibration(uri: str, tokenizer, seq_len: int) -> tuple[list[dict], list[list[int]]]:
    """The calibration set at `uri` (a folder with calibration.jsonl, or the file itself), as
    rows and as the token ids compression receives: each row's `text` tokenized by the model's
    tokenizer, not re-chunked, cut to seq_len."""
    path = calibration_file(uri)
    rows = read_calibration(storage.read_bytes(path).decode("utf-8"))
    if not rows or any(not isinstance(r.get("text"), str) or not r["text"] for r in rows):
        raise UserError(f"calibration set {uri}: empty, or a row without text")
    return rows, calibration_token_ids([r["text"] for r in rows], tokenizer, seq_len)


def _upload_folder(local: str, uri: str) -> None:
    for root, _, files in os.walk(local):
        for name in files:
            rel = os.path.relpath(os.path.join(root, name), local)
            with open(os.path.join(root, name), "rb") as f:
                storage.write_bytes(storage.join(uri, rel.replace(os.sep, "/")), f.read())


def _body(spec: dict, timed: RunClock, record: dict) -> None:
    import torch

    from cola_ray import models
    from cola_ray.evaluate import evaluate

    threads = int(spec.get("threads") or 0)
    if threads:  # Ray sets OMP threads from the trial's CPUs; torch must match, never oversubscribe
        torch.set_num_threads(threads)
    record["torch_threads"] = torch.get_num_threads()
    device = models.pick_device(spec["device"])
    with timed("load"):
        tokenizer = models.load_tokenizer(spec["model"])
        model = models.load_causal_lm(spec["model"], device, spec["dtype"])
    if spec["kind"] == "compressed":
        from cola_ray.compress import compress, weight_summary

        with timed("tokenize"):
            rows, tokens = load_calibration(spec["calibration"], tokenizer, spec["seq_len"])
        record["calibration_set"] = {"samples": len(tokens), "tokens": sum(map(len, tokens)),
                                     "token_ids_sha256": token_digest(tokens),
                                     "sources": dict(sorted(Counter(r.get("source", "?") for r in rows).items()))}
        with timed("compress"), tempfile.TemporaryDirectory(prefix="cola-model-") as tmp:
            save_dir = os.path.join(tmp, "model") if spec.get("save_model") else None
            model = compress(model, tokenizer, tokens, spec["recipe"], spec.get("params") or None,
                             max_seq_length=spec["seq_len"], save_dir=save_dir, inplace=True,
                             num_threads=threads or None)
            if save_dir:
                _upload_folder(save_dir, spec["save_model"])
                record["model_saved"] = spec["save_model"]
        record["weights"] = weight_summary(model)
    with timed("evaluate"):
        scores = evaluate(model, tokenizer, spec["suites"], limit=spec.get("eval_limit"),
                          batch_size=spec["eval_batch_size"], backend=spec["eval_backend"])
    record["scores"] = dict(scores)
    record["higher_is_better"] = dict(scores.higher_is_better)


def run_trial(spec: dict) -> dict:
    """Run one trial and write its result JSON (status ok or failed); return the record."""
    clock = RunClock()
    record: dict = {"key": spec["key"], "spec": {k: v for k, v in spec.items() if k != "result_uri"},
                    "host": socket.gethostname(), "started_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
    t0 = time.perf_counter()
    try:
        _body(spec, clock, record)
        record["status"] = "ok"
    except Exception as e:  # noqa: BLE001 - a failed trial is a result, recorded for the table
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        record.update(status="failed", error=f"{type(e).__name__}: {first}"[:500],
                      traceback=traceback.format_exc()[-4000:])
    record["timings_s"] = {**clock.timings, "total": round(time.perf_counter() - t0, 2)}
    storage.write_json(spec["result_uri"], record)
    return record


def tune_trainable(config: dict) -> None:
    """The Ray Tune function trainable: one grid point = one trial spec."""
    from ray import tune

    record = run_trial(config["trial"])
    tune.report({"ok": record["status"] == "ok", "total_s": record["timings_s"]["total"]})
