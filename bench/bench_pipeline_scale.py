"""Curate at scale (issue 12): the whole `cola-ray curate` on synthetic corpora of N documents,
side by side with a bare Ray Data pass over the same files.

For each N (default 10k, 100k; 1M if the machine has the time):
  corpus   three sources of skewed size (60 / 30 / 10 %), gzipped jsonl shards of <= 10,000
           documents, lengths log-uniform from ~200 to ~8,000 characters (Zipf words from an 8,000
           word vocabulary, paragraphs of ~60 words). Planted at known rates: exact copies of a
           document in the same source (2 %), the same boilerplate texts in every source (1 %;
           chunk-level duplicates across sources), and near copies (2 %: one word in 100
           replaced, at least one). The generator writes the plan (which document copies which)
           beside the corpus.
  curate   `cola-ray curate` as a user runs it (a subprocess), with a micro random Llama (2 layers,
           hidden 32) so the pipeline's own cost is what shows, --seq-len 512, filters off,
           near-dedup at its default threshold 0.8, 16 samples.
  bare     the reference: one Ray Data pass over the same files (read_json -> tokenize with the
           same tokenizer in map_batches -> write_parquet), also a subprocess.
Each run is sampled every 0.5 s: the driver's RSS, the proportional set size (PSS, so shared
pages count once) of the whole process tree (driver, Ray's GCS / raylet, every worker), and
/dev/shm in use (where Ray's object store lives). Spill is read from the Ray session's logs.
Duplicates found are read from the pool's resolved ledger: every planted exact copy must be
dropped; near-copy recall is counted over the planted pairs whose true shingle Jaccard is at
least the threshold (a short document with one word replaced can fall below it: those are
listed, not counted as misses).

    .venv/bin/python bench/bench_pipeline_scale.py --docs 10k,100k --json runs/bench/scale.json
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SOURCES = {"web": 0.6, "books": 0.3, "forum": 0.1}
SHARD_DOCS = 10_000
RATES = {"exact": 0.02, "boiler": 0.01, "near": 0.02}
SEQ_LEN = 512


def parse_n(s: str) -> int:
    s = s.strip().lower()
    mult = {"k": 1_000, "m": 1_000_000}.get(s[-1], 1)
    return int(float(s[:-1] if s[-1] in "km" else s) * mult)


# ----------------------------------------------------------------------------------- corpus
class Words:
    def __init__(self, seed: int = 0, size: int = 8000):
        rng = np.random.default_rng(seed)
        letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
        lengths = rng.integers(2, 10, size=size)
        self.vocab = np.array(["".join(rng.choice(letters, n)) for n in lengths])
        p = 1.0 / np.arange(1, size + 1) ** 1.1
        self.p = p / p.sum()

    def text(self, rng: np.random.Generator, chars: int) -> list[str]:
        n = max(8, chars // 6)
        return list(self.vocab[rng.choice(len(self.vocab), size=n, p=self.p)])


def render(words: list[str]) -> str:
    paras = [" ".join(words[i:i + 60]) for i in range(0, len(words), 60)]
    return "\n\n".join(p[:1].upper() + p[1:] + "." for p in paras)


def make_corpus(out: Path, n: int, seed: int = 0) -> dict:
    """Write the corpus under out/<source>/part-*.jsonl.gz; return the plan of planted copies."""
    if (out / "plan.json").exists():
        return json.loads((out / "plan.json").read_text())
    shutil.rmtree(out, ignore_errors=True)
    words = Words(seed)
    rng = np.random.default_rng(seed + 1)
    boiler = [render(words.text(rng, int(np.exp(rng.uniform(np.log(300), np.log(1500))))))
              for _ in range(max(1, int(n * RATES["boiler"] / len(SOURCES))))]
    plan = {"docs": n, "exact": [], "boiler": [], "near": []}  # [source, copy_text_index, of_index]
    for s_i, (source, share) in enumerate(SOURCES.items()):
        count = int(round(n * share))
        folder = out / source
        folder.mkdir(parents=True, exist_ok=True)
        srng = np.random.default_rng([seed, s_i])
        texts: list[str] = []
        for start in range(0, count, SHARD_DOCS):
            lines = []
            for i in range(start, min(count, start + SHARD_DOCS)):
                u = srng.random()
                if u < RATES["exact"] and i > start:
                    j = int(srng.integers(start, i))
                    text = texts[j]
                    plan["exact"].append([source, i, j])
                elif u < RATES["exact"] + RATES["boiler"]:
                    b = int(srng.integers(len(boiler)))
                    text = boiler[b]
                    plan["boiler"].append([source, i, b])
                elif u < RATES["exact"] + RATES["boiler"] + RATES["near"] and i > start:
                    j = int(srng.integers(start, i))
                    w = texts[j].split(" ")
                    for pos in srng.choice(len(w), size=max(1, len(w) // 100), replace=False):
                        w[pos] = str(words.vocab[srng.integers(len(words.vocab))])
                    text = " ".join(w)
                    plan["near"].append([source, i, j])
                else:
                    chars = int(np.exp(srng.uniform(np.log(200), np.log(8000))))
                    text = render(words.text(srng, chars))
                texts.append(text)
                lines.append(json.dumps({"text": text, "n": i}))
            with gzip.open(folder / f"part-{start // SHARD_DOCS:05d}.jsonl.gz", "wt", compresslevel=1) as f:
                f.write("\n".join(lines) + "\n")
    (out / "plan.json").write_text(json.dumps(plan))
    return plan


def corpus_texts(out: Path) -> dict[str, list[str]]:
    texts = {}
    for source in SOURCES:
        rows = []
        for part in sorted((out / source).glob("part-*.jsonl.gz")):
            with gzip.open(part, "rt") as f:
                rows.extend(json.loads(line)["text"] for line in f)
        texts[source] = rows
    return texts


# ---------------------------------------------------------------------------- micro model
def micro_model(out: Path) -> Path:
    """A 2-layer, hidden-32 random Llama with a byte-level BPE of 4,096 tokens trained on the
    generator's own text (about 5 characters per token, as real tokenizers get on English)."""
    if (out / "config.json").exists():
        return out
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    words, rng = Words(0), np.random.default_rng(99)
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator((render(words.text(rng, 4000)) for _ in range(300)), trainers.BpeTrainer(
        vocab_size=4096, special_tokens=["<unk>", "<s>", "</s>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                            pad_token="<pad>").save_pretrained(out)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=4096, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=1024,
                      bos_token_id=1, eos_token_id=2, pad_token_id=3)
    LlamaForCausalLM(cfg).save_pretrained(out)
    return out


# ------------------------------------------------------------------------------- sampling
class Sampler(threading.Thread):
    """Peak driver RSS, peak PSS of the whole process tree, peak /dev/shm use, every 0.5 s."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid, self.stop = pid, threading.Event()
        self.driver = self.tree = self.shm = 0
        self.shm0 = shutil.disk_usage("/dev/shm").used

    def run(self) -> None:
        import psutil

        root = psutil.Process(self.pid)
        while not self.stop.is_set():
            try:
                self.driver = max(self.driver, root.memory_info().rss)
                total = 0
                for p in [root, *root.children(recursive=True)]:
                    try:
                        total += p.memory_full_info().pss
                    except (psutil.NoSuchProcess, psutil.AccessDenied):
                        pass
                self.tree = max(self.tree, total)
                self.shm = max(self.shm, shutil.disk_usage("/dev/shm").used - self.shm0)
            except psutil.NoSuchProcess:
                break
            self.stop.wait(0.5)


def measured(cmd: list[str], env: dict, log: Path) -> dict:
    t0 = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
        sampler = Sampler(proc.pid)
        sampler.start()
        rc = proc.wait()
        sampler.stop.set()
        sampler.join()
    wall = time.perf_counter() - t0
    if rc != 0:
        raise SystemExit(f"{cmd[:3]} failed (rc {rc}); see {log}")
    return {"wall_s": round(wall, 1), "driver_rss_mib": round(sampler.driver / 2**20),
            "tree_pss_mib": round(sampler.tree / 2**20), "shm_peak_mib": round(sampler.shm / 2**20)}


def spilled_mib(since: float) -> float:
    """MiB spilled to disk by Ray sessions started after `since` (raylet logs 'Spilled N MiB')."""
    import re

    total = 0.0
    for d in Path("/tmp/ray").glob("session_2*"):
        if d.stat().st_mtime < since:
            continue
        for f in (d / "logs").glob("raylet*.out"):
            vals = re.findall(r"Spilled (\d+) MiB", f.read_text(errors="replace"))
            if vals:
                total += float(vals[-1])
    return total


BARE = """
import sys, ray
import pyarrow as pa
from transformers import AutoTokenizer
files, model, out = sys.argv[1].split(","), sys.argv[2], sys.argv[3]
ray.init(num_cpus={cpus}, include_dashboard=False, log_to_driver=False)
tok = AutoTokenizer.from_pretrained(model)
def tokenize(batch):
    enc = tok(batch.column("text").to_pylist(), add_special_tokens=False, verbose=False)
    return pa.table({{"num_tokens": [len(x) for x in enc["input_ids"]], "input_ids": enc["input_ids"]}})
ds = ray.data.read_json(files).map_batches(tokenize, batch_format="pyarrow", batch_size=256)
ds.write_parquet(out)
"""


def run_one(n: int, args, work: Path, env: dict) -> dict:
    corpus = work / f"corpus-{n}"
    t0 = time.perf_counter()
    plan = make_corpus(corpus, n)
    gen_s = time.perf_counter() - t0
    model = micro_model(work / "micro-model")
    files = sorted(str(p) for p in corpus.glob("*/part-*.jsonl.gz"))
    row: dict = {"docs": n, "files": len(files), "generate_s": round(gen_s, 1)}

    out = work / f"curate-{n}"
    shutil.rmtree(out, ignore_errors=True)
    since = time.time()
    cmd = [str(Path(sys.executable).with_name("cola-ray")), "curate", "--model", str(model), "--out", str(out),
           "--seq-len", str(SEQ_LEN), "--num-samples", "16", "--workers", str(args.workers),
           "--shard-size", str(args.shard_size), "--stat-layers", "0"]
    for source in SOURCES:
        cmd += ["--corpus", str(corpus / source / "*.jsonl.gz")]
    row["curate"] = measured(cmd, env, work / f"curate-{n}.log")
    row["curate"]["spilled_mib"] = spilled_mib(since)
    manifest = json.loads((out / "manifest.json").read_text())
    row["curate"]["timings"] = manifest.get("timings_s")
    row["curate"]["counts"] = manifest.get("counts", {}).get("chunks") or manifest.get("counts")
    row["curate"]["shards"] = len(list((out / "work" / "activations").glob("shard-*.parquet")))
    row["dups"] = duplicates_found(out, corpus, plan, args.threshold)

    bare_out = work / f"bare-{n}"
    shutil.rmtree(bare_out, ignore_errors=True)
    script = work / "bare.py"
    script.write_text(BARE.format(cpus=os.cpu_count()))
    since = time.time()
    row["bare"] = measured([sys.executable, str(script), ",".join(files), str(model),
                            str(bare_out)], env, work / f"bare-{n}.log")
    row["bare"]["spilled_mib"] = spilled_mib(since)
    row["docs_per_s"] = {k: round(n / row[k]["wall_s"], 1) for k in ("curate", "bare")}
    row["ratio_to_bare"] = round(row["docs_per_s"]["curate"] / row["docs_per_s"]["bare"], 3)
    if not args.keep:
        shutil.rmtree(bare_out, ignore_errors=True)
    return row


def duplicates_found(out: Path, corpus: Path, plan: dict, threshold: float) -> dict:
    """Planted copies against the pool's resolved ledger (a document is kept when any of its
    chunks is kept)."""
    import pyarrow.compute as pc

    from cola_ray.pool import Pool
    from cola_ray.stages.ingest import doc_id
    from cola_ray.stages.neardup import shingles

    shard_dir = out / "work" / "activations"
    ledger = Pool.open(str(shard_dir)).ledger()
    kept_docs = set(pc.filter(ledger.column("doc_id"), pc.equal(ledger.column("drop"), "")).to_pylist())
    texts = corpus_texts(corpus)
    ids = {s: [doc_id(s, t) for t in ts] for s, ts in texts.items()}

    exact_planted = len(plan["exact"])
    # within a source, a copy has its original's id: the pool must hold that id once
    exact_survived = sum(1 for s, i, j in plan["exact"] if ids[s][i] != ids[s][j])
    # boilerplate: every text kept by at most one document overall
    by_text: dict[str, set] = {}
    for s, i, _ in plan["boiler"]:
        by_text.setdefault(texts[s][i], set()).add(ids[s][i])
    boiler_extra_kept = sum(max(0, len(d & kept_docs) - 1) for d in by_text.values())
    near_eligible = near_found = 0
    below = []
    for s, i, j in plan["near"]:
        a, b = shingles(texts[s][i], 5), shingles(texts[s][j], 5)
        jac = len(a & b) / max(1, len(a | b))
        both_kept = ids[s][i] in kept_docs and ids[s][j] in kept_docs
        if jac >= threshold:
            near_eligible += 1
            near_found += not both_kept
        else:
            below.append(round(jac, 3))
    return {"exact_planted": exact_planted, "exact_ids_distinct": exact_survived,
            "boiler_planted": len(plan["boiler"]), "boiler_unique_texts": len(by_text),
            "boiler_extra_kept": boiler_extra_kept,
            "near_planted": len(plan["near"]), "near_eligible": near_eligible, "near_found": near_found,
            "near_recall": round(near_found / near_eligible, 4) if near_eligible else None,
            "near_below_threshold": len(below)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", default="10k,100k", help="comma-separated corpus sizes (k, M suffixes)")
    ap.add_argument("--work", default=str(ROOT / "runs/bench/scale"))
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--shard-size", type=int, default=512)
    ap.add_argument("--threshold", type=float, default=0.8)
    ap.add_argument("--keep", action="store_true", help="keep the bare pass's parquet output")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    # RAY_BACKEND_LOG_LEVEL=info: Ray's default, which curate quietens to fatal; spilled_mib reads
    # the raylet's "Spilled N MiB" info lines
    env = dict(os.environ, RAY_AUTH_MODE="disabled", TOKENIZERS_PARALLELISM="false", COLA_RAY_NO_PROGRESS="1",
               RAY_BACKEND_LOG_LEVEL="info")
    rows = []
    for n in map(parse_n, args.docs.split(",")):
        row = run_one(n, args, work, env)
        rows.append(row)
        print(json.dumps(row), flush=True)
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps({"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                                                   "cpus": os.cpu_count(), "rows": rows}, indent=1))
    if len(rows) >= 3:
        per = lambda a, b, k: (b[k]["wall_s"] - a[k]["wall_s"]) / (b["docs"] - a["docs"])  # noqa: E731
        small, large = per(rows[0], rows[1], "curate"), per(rows[-2], rows[-1], "curate")
        print(f"marginal s/doc: smallest pair {small:.2e}, largest pair {large:.2e} (ratio {large / small:.2f})")


if __name__ == "__main__":
    main()
