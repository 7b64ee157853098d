"""The near-dedup pass alone at scale (issue 12): where its time goes as N grows.

The corpus is bench_pipeline_scale.py's (three skewed sources, planted exact, boilerplate and
near copies); the pass is workflows/processing.find_near_duplicates' steps, each timed:
  bands      read + quality filter + MinHash + LSH band rows (materialised; signatures to files)
  groups     the shuffle by bucket and the candidate pairs of each group, gathered on the driver
  readback   the candidates' signatures read back from the per-batch files
  verify     the candidate pairs checked on the driver
with the row, group, file and pair counts that explain them. Marginal cost per document
between consecutive N shows whether a step is linear.

    .venv/bin/python bench/bench_neardup_scale.py --docs 100k,300k --json bench/records/neardup-DATE.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_extraction import _self_cpu as _cpu_s  # noqa: E402
from bench_pipeline_scale import ROOT, SOURCES, make_corpus, parse_n  # noqa: E402


def profile(n: int, work: Path, threshold: float) -> dict:
    import pyarrow as pa
    import pyarrow.compute as pc
    import ray

    from cola_ray import storage
    from cola_ray.stages import ingest, neardup, runner
    from cola_ray.stages.base import FunctionStage
    from cola_ray.stages.filters import FilterConfig
    from cola_ray.workflows import processing

    corpus = work / f"corpus-{n}"
    make_corpus(corpus, n)
    files = ingest.discover([str(corpus / s / "*.jsonl.gz") for s in SOURCES])
    docs = ingest.read_documents(files, "text")
    folder = str(work / f"signatures-{n}")
    storage.delete(folder)
    row: dict = {"docs": n, "files": len(files)}
    t, driver_cpu = time.perf_counter(), _cpu_s()
    survivors = runner.run(docs, FunctionStage(processing._counted_survivors, args=(None,), batch_size=64))
    buckets = runner.run(survivors, FunctionStage(neardup.band_rows, args=(threshold, folder))).materialize()
    row["band_rows"] = buckets.count()
    row["bands_s"] = round(time.perf_counter() - t, 2)
    row["bands_driver_cpu_s"] = round(_cpu_s() - driver_cpu, 2)  # the driver competes for the 2 cores
    # Ray's own per-operator task figures: whether the tasks themselves got slower with N, or
    # the time went between them (scheduling, the driver)
    row["bands_ray_stats"] = [line.strip() for line in buckets.stats().splitlines()
                              if any(w in line for w in ("tasks executed", "Remote wall time", "Remote cpu time",
                                                         "Operator", "Total time", "Peak heap"))]
    t = time.perf_counter()
    pairs: set = set()
    for batch in processing.candidate_pairs(buckets).iter_batches(batch_format="pyarrow", batch_size=None):
        pairs.update(zip(batch.column("a").to_pylist(), batch.column("b").to_pylist()))
    row["pairs"] = len(pairs)
    row["groups_s"] = round(time.perf_counter() - t, 2)
    t = time.perf_counter()
    sig_files = storage.list_files(folder, ".parquet")
    wanted = pa.array(sorted({i for p in pairs for i in p}), pa.string())
    signatures = storage.read_parquet(sig_files, ["id", "key", "signature"], filter=pc.field("id").isin(wanted))
    row["signature_files"], row["readback_rows"] = len(sig_files), signatures.num_rows
    row["readback_s"] = round(time.perf_counter() - t, 2)
    t = time.perf_counter()
    verdicts = neardup.drop_reasons(neardup.verify_pairs(pairs, signatures, threshold))
    row["verify_s"] = round(time.perf_counter() - t, 2)
    row["drops"] = len(verdicts)
    row["total_s"] = round(row["bands_s"] + row["groups_s"] + row["readback_s"] + row["verify_s"], 2)
    storage.delete(folder)
    del FilterConfig, ray
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", default="10k,100k")
    ap.add_argument("--work", default=str(ROOT / "runs/bench/scale"))
    ap.add_argument("--threshold", type=float, default=0.8)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    import ray

    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
    ray.init(include_dashboard=False, log_to_driver=False)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    for n in map(parse_n, args.docs.split(",")):
        rows.append(profile(n, work, args.threshold))
        print(json.dumps({k: v for k, v in rows[-1].items() if k != "bands_ray_stats"}), flush=True)
        print("\n".join(rows[-1]["bands_ray_stats"]), flush=True)
    for a, b in zip(rows, rows[1:]):
        print(f"{a['docs']} -> {b['docs']}: marginal " + ", ".join(
            f"{k[:-2]} {1000 * (b[k] - a[k]) / (b['docs'] - a['docs']):.3f} ms/doc"
            for k in ("bands_s", "groups_s", "readback_s", "verify_s", "total_s")))
    if args.json:
        record = {"command": " ".join(sys.argv), "date": time.strftime("%Y-%m-%d"), "cpus": os.cpu_count(),
                  "rows": rows}
        Path(args.json).write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
