"""Where curate's heavy stage spends its CPU, step by step (issue 12).

bench_pipeline_scale.py times curate's stages from the manifest, but "ingest+process+activations"
is one streaming Ray Data plan whose steps Ray fuses into one task or actor, so neither the
manifest nor Ray's timeline separates them. This runs each step of that plan alone, in this one
process, on the same corpus, micro model and settings (bench_pipeline_scale's), in the order the
plan runs them, and times each with its CPU seconds:
  read      lines.read_lines per file (the raw JSON lines)
  label     ingest.LabelDocuments (parse, text field, document ids)
  chunk     process.chunk_batch in batches of 64 documents (quality filters, tokenize, split)
  embed     ActivationExtractor.process in batches of --shard-size chunks (forward pass, pooling,
            projection, shard write), on one actor's torch threads
and, in the same run, curate itself through the CLI's code path (run_curate, Ray, --workers), so
that the sum of the steps can be set against the stage's wall time. Per step: CPU seconds per
1,000 documents and its share of the sum.

    .venv/bin/python bench/profile_curate_stages.py --docs 10k --json bench/records/stages-DATE.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_extraction import _self_cpu as _cpu  # noqa: E402
from bench_pipeline_scale import ROOT, SEQ_LEN, SOURCES, make_corpus, micro_model, parse_n  # noqa: E402


class Clock:
    """Wall and CPU seconds per named step, summed over calls; the steps named in `profiled`
    also run under cProfile (one profile per step)."""

    def __init__(self, profiled: tuple[str, ...] = ()) -> None:
        import cProfile

        self.steps: dict[str, dict] = {}
        self.profiles = {name: cProfile.Profile() for name in profiled}

    def __call__(self, name: str, fn, *args, **kw):
        profile = self.profiles.get(name)
        t, c = time.perf_counter(), _cpu()
        if profile:
            profile.enable()
        out = fn(*args, **kw)
        if profile:
            profile.disable()
        step = self.steps.setdefault(name, {"wall_s": 0.0, "cpu_s": 0.0, "calls": 0})
        step["wall_s"] += time.perf_counter() - t
        step["cpu_s"] += _cpu() - c
        step["calls"] += 1
        return out


def steps_alone(corpus: Path, model: Path, work: Path, cfg, clock: Clock) -> tuple[dict, dict]:
    import pyarrow as pa

    from cola_ray.stages import activations, ingest, lines, neardup, process
    from cola_ray.workflows.processing import parse_filters

    extractor = activations.ActivationExtractor(
        model=cfg.model, layers=cfg.layers, proj_dim=cfg.proj_dim, seed=cfg.seed, device="cpu", dtype="float32",
        micro_batch_size=cfg.batch_size, shard_dir=str(work / "steps-shards"), batch_size=cfg.shard_size,
        stat_layers=cfg.stat_layers)
    clock("embed_setup", extractor.setup)
    counts = {"documents": 0, "chunks": 0, "embedded": 0}
    pending: list[pa.Table] = []

    def flush(final: bool = False) -> None:
        table = pa.concat_tables(pending) if pending else None
        pending.clear()
        while table is not None and (table.num_rows >= cfg.shard_size or (final and table.num_rows)):
            part, table = table.slice(0, cfg.shard_size), table.slice(cfg.shard_size)
            ledger = clock("embed", extractor.process, part)
            counts["embedded"] += sum(1 for d in ledger.column("drop").to_pylist() if not d)
            table = table if table.num_rows else None
        if table is not None:
            pending.append(table)

    verdicts = neardup.Verdicts({})  # the near-dedup pass is bench_neardup_scale.py's
    quality = parse_filters(cfg.filters)
    for source in SOURCES:
        label = ingest.LabelDocuments(source, "text")
        for uri in sorted(str(p) for p in (corpus / source).glob("*.jsonl.gz")):
            for raw in clock("read", lambda u=uri: list(lines.read_lines(pa.table({"uri": [u]})))):
                docs = clock("label", label, raw)
                counts["documents"] += docs.num_rows
                for lo in range(0, docs.num_rows, 64):
                    chunks = clock("chunk", process.chunk_batch, docs.slice(lo, 64), cfg.model, cfg.seq_len,
                                   cfg.min_tokens, quality=quality, near_dups=verdicts)
                    counts["chunks"] += chunks.num_rows
                    pending.append(chunks)
                    flush()
    flush(final=True)
    return clock.steps, counts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", default="10k")
    ap.add_argument("--work", default=str(ROOT / "runs/bench/scale"))
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--shard-size", type=int, default=512)
    ap.add_argument("--json", default=None)
    ap.add_argument("--cprofile", default="", help="comma-separated steps to run under cProfile (e.g. embed,chunk): "
                                                  "their top functions by own time are printed")
    args = ap.parse_args()
    import torch

    from cola_ray.config import CurateConfig
    from cola_ray.workflows.curate import run_curate

    os.environ.setdefault("COLA_RAY_NO_PROGRESS", "1")
    n, work = parse_n(args.docs), Path(args.work)
    corpus = work / f"corpus-{n}"
    make_corpus(corpus, n)
    model = micro_model(work / "micro-model")
    out = work / f"profile-{n}"
    shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(work / "steps-shards", ignore_errors=True)
    cfg = CurateConfig(model=str(model), out=str(out), seq_len=SEQ_LEN, num_samples=16, workers=args.workers,
                       shard_size=args.shard_size, stat_layers=0,
                       corpus=[str(corpus / s / "*.jsonl.gz") for s in SOURCES])
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // args.workers))  # what one activation actor gets
    t0 = time.perf_counter()
    clock = Clock(tuple(filter(None, args.cprofile.split(","))))
    steps, counts = steps_alone(corpus, model, work, cfg, clock)
    steps_wall = time.perf_counter() - t0
    t0 = time.perf_counter()
    manifest = run_curate(cfg)
    curate_wall = time.perf_counter() - t0
    total_cpu = sum(s["cpu_s"] for s in steps.values())
    for s in steps.values():
        s.update(wall_s=round(s["wall_s"], 2), cpu_s=round(s["cpu_s"], 2),
                 cpu_ms_per_doc=round(1000 * s["cpu_s"] / n, 3), share=round(s["cpu_s"] / total_cpu, 3))
    record = {"command": " ".join(sys.argv), "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "cpus": os.cpu_count(),
              "docs": n, "counts": counts, "steps": steps, "steps_wall_s": round(steps_wall, 1),
              "curate_wall_s": round(curate_wall, 1), "curate_timings_s": manifest["timings_s"],
              "curate_embedded": manifest["counts"]["embedded"]}
    print(f"{n} documents, {counts['chunks']} chunk rows, {counts['embedded']} embedded; steps alone "
          f"{steps_wall:.1f}s wall, {total_cpu:.1f} CPU-s; curate {curate_wall:.1f}s wall, stages "
          f"{manifest['timings_s']}")
    print("| step | calls | wall s | CPU s | CPU ms/doc | share |\n|---|---|---|---|---|---|")
    for name, s in steps.items():
        print(f"| {name} | {s['calls']} | {s['wall_s']} | {s['cpu_s']} | {s['cpu_ms_per_doc']} | {s['share']} |")
    for name, profile in clock.profiles.items():
        import pstats

        print(f"\n--- {name}: top functions by own time")
        pstats.Stats(profile).sort_stats("tottime").print_stats(12)
    if args.json:
        Path(args.json).write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
