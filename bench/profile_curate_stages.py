"""Where curate's heavy stage spends its CPU, per Ray task and actor method (issue 12).

bench_pipeline_scale.py times curate's stages from the manifest, but "ingest+process+activations"
is one streaming Ray Data plan: reading, labelling, chunking (tokenize + split) and the activation
actors overlap in it. This runs the same curate (same corpus, micro model and flags) in-process,
then reads Ray's own task timeline (`ray.timeline`) and sums the time of every task and actor call
by name, so the share of each step is measured, not guessed. On 2 cores the sums exceed the wall
time (two processes run at once) and include waiting inside a task, so compare the shares.

    .venv/bin/python bench/profile_curate_stages.py --docs 10k --json bench/records/stages-DATE.json
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_pipeline_scale import ROOT, SEQ_LEN, SOURCES, make_corpus, micro_model, parse_n  # noqa: E402


def by_name(events: list[dict]) -> dict[str, dict]:
    """Chrome-trace complete events ("ph": "X", microseconds) summed per event name."""
    totals: dict[str, dict] = collections.defaultdict(lambda: {"calls": 0, "seconds": 0.0})
    for e in events:
        if e.get("ph") == "X" and "dur" in e:
            t = totals[e["name"]]
            t["calls"] += 1
            t["seconds"] += e["dur"] / 1e6
    return {k: {"calls": v["calls"], "seconds": round(v["seconds"], 2)}
            for k, v in sorted(totals.items(), key=lambda kv: -kv[1]["seconds"])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", default="10k")
    ap.add_argument("--work", default=str(ROOT / "runs/bench/scale"))
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--shard-size", type=int, default=512)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    import ray

    from cola_ray.config import CurateConfig
    from cola_ray.workflows.curate import run_curate

    os.environ.setdefault("COLA_RAY_NO_PROGRESS", "1")
    n, work = parse_n(args.docs), Path(args.work)
    corpus = work / f"corpus-{n}"
    make_corpus(corpus, n)
    model = micro_model(work / "micro-model")
    out = work / f"profile-{n}"
    shutil.rmtree(out, ignore_errors=True)
    ray.init(include_dashboard=False, log_to_driver=False)
    cfg = CurateConfig(model=str(model), out=str(out), seq_len=SEQ_LEN, num_samples=16, workers=args.workers,
                       shard_size=args.shard_size, stat_layers=0,
                       corpus=[str(corpus / s / "*.jsonl.gz") for s in SOURCES])
    t0 = time.perf_counter()
    manifest = run_curate(cfg)
    wall = time.perf_counter() - t0
    totals = by_name(ray.timeline())
    ray.shutdown()
    record = {"command": " ".join(sys.argv), "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "cpus": os.cpu_count(),
              "docs": n, "wall_s": round(wall, 1), "timings_s": manifest["timings_s"], "tasks": totals}
    print(f"{n} documents: wall {wall:.1f}s; stages {manifest['timings_s']}")
    print("| task or actor call | calls | seconds |\n|---|---|---|")
    for name, t in list(totals.items())[:25]:
        print(f"| {name} | {t['calls']} | {t['seconds']} |")
    if args.json:
        Path(args.json).write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
