"""Extraction throughput: the cola-ray pipeline against a bare forward loop and the naive way.

One chunk set is built once (the demo corpus, tokenized and split by cola-ray's own Chunker) and
every method embeds exactly those chunks; tokens/s counts real tokens only, never padding.

  a    bare loop: one process, no Ray; the decoder layers up to the deepest chosen layer (the
       stack is truncated after it; no LM head), micro-batches of
       --batch-size chunks sorted by length, right padding, masked mean of the chosen layers.
  P    the real pipeline: `run_curate` on a corpus file whose documents are exactly the chunk
       texts (filters and near-dedup off, so every chunk is embedded). Reported three ways:
         e2e    the whole run_curate call (ray.init, validation, read, tokenize, exact-dedup
                shuffle, actor start + model load, forward, shard writes, k-means, outputs);
         stage  its "ingest+process+activations" stage (the streaming Ray Data part);
         fwd    the time the actor spent inside embed_sorted (its forward passes) only.
  Pact the activation step alone as cola-ray runs it (workflows.embedding.embed: the
       ActivationExtractor actor pool) fed the already tokenized chunks from memory: Ray Data
       scheduling, actor start + model load, forward and shard writes, no tokenization.
  b    naive (the prototype's way): every chunk padded to --seq-len, the whole model with
       output_hidden_states=True (LM head included), mean over all positions incl. padding.

Every method uses --threads torch threads (the pipeline's single actor gets all cores the same
way). The whole benchmark runs at the niceness given by --nice (Ray starts its workers at
niceness 15; running the baselines at the same niceness keeps the comparison fair on a machine
shared with other work). The 1-minute load average is recorded around every measurement.

    .venv/bin/python bench/bench_extraction.py --chunks 96
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import tempfile
import threading
import time

import pyarrow as pa
import pyarrow.compute as pc

DEFAULT_MODEL = "demo:smollm2-135m"


def load_average() -> float:
    return round(os.getloadavg()[0], 2)


class LoadSampler:
    """The 1-minute load average every 5 s while a measurement runs (mean and max)."""

    def __enter__(self) -> LoadSampler:
        self.samples = [load_average()]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(5.0):
            self.samples.append(load_average())

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.samples.append(load_average())
        self.mean, self.max = sum(self.samples) / len(self.samples), max(self.samples)


def _self_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class TreeCpu:
    """CPU seconds of this process and all its descendants (Ray's raylet, workers, actors),
    sampled every 0.25 s so processes that exit keep their last reading."""

    def __init__(self) -> None:
        import psutil

        self._psutil, self._root = psutil, psutil.Process()
        self._seen: dict[tuple[int, float], float] = {}
        self._base: dict[tuple[int, float], float] = {}
        self._stop = threading.Event()

    def _sample(self, into: dict) -> None:
        for p in [self._root] + self._root.children(recursive=True):
            try:
                t = p.cpu_times()
                into[(p.pid, p.create_time())] = t.user + t.system
            except (self._psutil.NoSuchProcess, self._psutil.AccessDenied):
                continue

    def _run(self) -> None:
        while not self._stop.wait(0.25):
            self._sample(self._seen)

    def __enter__(self) -> TreeCpu:
        self._sample(self._base)
        self._seen.update(self._base)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sample(self._seen)
        self.seconds = sum(v - self._base.get(k, 0.0) for k, v in self._seen.items())


# ----------------------------------------------------------------------------------- chunk set

def build_chunks(model: str, n: int, seq_len: int, min_tokens: int, workdir: str) -> tuple[str, pa.Table]:
    """The first n distinct kept chunks of the demo corpus (domains interleaved), written as a
    corpus file of one document per chunk; returns (corpus path, the chunks exactly as the
    pipeline's Chunker cuts that file: the rows every method embeds)."""
    from cola_ray import demo
    from cola_ray.stages import ingest, process

    chunker = process.Chunker(model, seq_len, min_tokens)
    per_domain = []
    for path in demo.demo_corpus():
        source = os.path.basename(path).split(".")[0]
        texts = [json.loads(line)["text"] for line in open(path, encoding="utf-8")]
        docs = pa.table({"doc_id": [ingest.doc_id(source, t) for t in texts],
                         "source": [source] * len(texts), "text": texts})
        per_domain.append([r for r in chunker(docs).to_pylist() if not r["drop"]])
    picked, keys = [], set()
    for group in zip(*per_domain):  # round robin over wiki, news, code
        for row in group:
            if row["dedup_key"] not in keys and len(picked) < n:
                keys.add(row["dedup_key"])
                picked.append(row["text"])
    if len(picked) < n:
        raise SystemExit(f"--chunks {n}: the demo corpus gives only {len(picked)}")
    corpus = os.path.join(workdir, "chunks.jsonl")
    with open(corpus, "w", encoding="utf-8") as f:
        for t in picked:
            f.write(json.dumps({"text": t}) + "\n")
    # What the pipeline will embed: the same file through the same Chunker (a chunk's text can
    # re-tokenize a token longer or shorter at its edges).
    source = ingest.source_label(corpus)
    docs = pa.table({"doc_id": [ingest.doc_id(source, t) for t in picked], "source": [source] * len(picked),
                     "text": picked})
    table = chunker(docs)
    table = table.filter(pc.equal(table.column("drop"), ""))
    return corpus, table


# ------------------------------------------------------------------------------------ methods

def _pool(hidden, mask):
    import torch

    m = mask.unsqueeze(-1)
    return (hidden.masked_fill(~m, 0.0).sum(1) / mask.sum(-1, keepdim=True).clamp(min=1)).to(torch.float32)


def _synced(device: str) -> float:
    """perf_counter after the GPU's queued work is done (CUDA kernels run asynchronously)."""
    import torch

    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter()


def bare_loop(model_id: str, tokens: list[list[int]], layers_spec: str, batch_size: int, device: str = "cpu",
              dtype: str = "float32") -> dict:
    """(a) plain torch: the decoder stack truncated after the deepest chosen layer, no Ray.
    `layer_params`: the parameters of the layers run, for the FLOP count (see main)."""
    import torch

    from cola_ray.models import find_decoder_layers, load_causal_lm, load_tokenizer, parse_layers
    from cola_ray.stages.activations import adds_bos, pad_batch

    lm = load_causal_lm(model_id, device, dtype)
    tok = load_tokenizer(model_id)
    layers = parse_layers(layers_spec, len(find_decoder_layers(lm)))
    base = lm.get_decoder() if hasattr(lm, "get_decoder") else lm.model
    base.layers = base.layers[: layers[-1] + 1]
    layer_params = sum(p.numel() for p in base.layers.parameters())
    bos, pad = adds_bos(tok), tok.pad_token_id if tok.pad_token_id is not None else 0
    order = sorted(range(len(tokens)), key=lambda i: (len(tokens[i]), i))
    cpu0, t0 = _self_cpu(), _synced(device)
    with torch.inference_mode():
        for lo in range(0, len(order), batch_size):
            ids, attn, pool = (t.to(device) for t in pad_batch([tokens[i] for i in order[lo: lo + batch_size]],
                                                               pad, bos))
            pos = (attn.long().cumsum(-1) - 1).clamp(min=0)
            out = base(input_ids=ids, attention_mask=attn, position_ids=pos, use_cache=False,
                       output_hidden_states=True)
            _ = [_pool(out.hidden_states[i + 1], pool).cpu() for i in layers]
    return {"wall_s": _synced(device) - t0, "cpu_s": _self_cpu() - cpu0, "layer_params": layer_params}


def naive(model_id: str, tokens: list[list[int]], seq_len: int, batch_size: int, device: str = "cpu",
          dtype: str = "float32") -> dict:
    """(b) every chunk padded to seq_len, the full model with output_hidden_states (LM head
    included), mean over every position, padding included; chunks in corpus order."""
    import torch

    from cola_ray.models import load_causal_lm, load_tokenizer

    lm = load_causal_lm(model_id, device, dtype)
    tok = load_tokenizer(model_id)
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    cpu0, t0 = _self_cpu(), _synced(device)
    with torch.inference_mode():
        for lo in range(0, len(tokens), batch_size):
            batch = tokens[lo: lo + batch_size]
            ids = torch.full((len(batch), seq_len), pad, dtype=torch.long)
            attn = torch.zeros((len(batch), seq_len), dtype=torch.long)
            for r, t in enumerate(batch):
                ids[r, : len(t)] = torch.tensor(t[:seq_len])
                attn[r, : len(t)] = 1
            out = lm(input_ids=ids.to(device), attention_mask=attn.to(device), output_hidden_states=True)
            _ = [h.mean(1).cpu() for h in out.hidden_states]
    return {"wall_s": _synced(device) - t0, "cpu_s": _self_cpu() - cpu0}


def timed_extractor(log_path: str, threads: int | None = None):
    """ActivationExtractor with timers (setup, embed_sorted, whole process) appended to
    log_path by the actor; the work it does is unchanged. `threads` overrides the torch thread
    count the pipeline would give the actor (None: keep the pipeline's own choice)."""
    from cola_ray.stages.activations import ActivationExtractor

    class TimedExtractor(ActivationExtractor):
        LOG, THREADS = log_path, threads

        def __init__(self, **kw):
            if self.THREADS:
                kw["threads"] = self.THREADS
            super().__init__(**kw)

        def setup(self):
            t0 = time.perf_counter()
            super().setup()
            import torch

            self._write({"init_s": time.perf_counter() - t0, "torch_threads": torch.get_num_threads()})

        def _write(self, rec: dict) -> None:
            with open(self.LOG, "a") as f:
                f.write(json.dumps(dict(rec, pid=os.getpid())) + "\n")

        def embed_sorted(self, token_lists):
            t0, c0 = time.perf_counter(), time.process_time()
            out = super().embed_sorted(token_lists)
            self._write({"embed_s": time.perf_counter() - t0, "embed_cpu_s": time.process_time() - c0,
                         "chunks": len(token_lists)})
            return out

        def process(self, batch):
            t0 = time.perf_counter()
            out = super().process(batch)
            self._write({"call_s": time.perf_counter() - t0, "rows": batch.num_rows})
            return out

    return TimedExtractor


def _actor_log(path: str) -> dict:
    recs = [json.loads(line) for line in open(path)] if os.path.exists(path) else []
    return {"actor_init_s": sum(r.get("init_s", 0) for r in recs),
            "actor_fwd_s": sum(r.get("embed_s", 0) for r in recs),
            "actor_fwd_cpu_s": sum(r.get("embed_cpu_s", 0) for r in recs),
            "actor_call_s": sum(r.get("call_s", 0) for r in recs),
            "actors": len({r["pid"] for r in recs if "init_s" in r}),
            "actor_torch_threads": sorted({r["torch_threads"] for r in recs if "torch_threads" in r})}


def pipeline(args, corpus: str, workdir: str) -> dict:
    """(P) run_curate end to end on the chunk-text corpus, activation actors timed from inside."""
    from cola_ray.config import CurateConfig
    from cola_ray.stages import activations
    from cola_ray.workflows.curate import run_curate

    log_path = os.path.join(workdir, "actor-e2e.jsonl")
    original = activations.ActivationExtractor
    activations.ActivationExtractor = timed_extractor(log_path, args.actor_threads)
    cfg = CurateConfig(model=args.model, corpus=[corpus], out=os.path.join(workdir, "run"),
                       num_samples=args.num_samples, seq_len=args.seq_len, min_tokens=args.min_tokens,
                       layers=args.layers, workers=args.workers, batch_size=args.batch_size,
                       filters=["off"], near_dup_threshold=0.0, dtype=args.dtype, device=args.device)
    try:
        with TreeCpu() as cpu:
            t0 = time.perf_counter()
            manifest = run_curate(cfg)
            wall = time.perf_counter() - t0
    finally:
        activations.ActivationExtractor = original
    counts = manifest["counts"]
    return {"wall_s": wall, "cpu_s": cpu.seconds, "timings_s": manifest["timings_s"],
            "embedded": counts["embedded"],
            "tokens_embedded": sum(s["tokens_embedded"] for s in counts["per_source"].values()),
            **_actor_log(log_path)}


def activation_stage(args, chunks: pa.Table, workdir: str) -> dict:
    """(Pact) the ActivationExtractor actor pool exactly as curate wires it, fed from memory."""
    import ray

    from cola_ray.config import CurateConfig
    from cola_ray.stages import activations
    from cola_ray.workflows.common import ensure_ray
    from cola_ray.workflows.embedding import embed

    ensure_ray()
    log_path = os.path.join(workdir, "actor-stage.jsonl")
    cfg = CurateConfig(model=args.model, corpus=["-"], seq_len=args.seq_len, layers=args.layers,
                       workers=args.workers, batch_size=args.batch_size, dtype=args.dtype, device=args.device)
    original = activations.ActivationExtractor
    activations.ActivationExtractor = timed_extractor(log_path, args.actor_threads)
    try:
        with TreeCpu() as cpu:
            t0 = time.perf_counter()
            ds = embed(ray.data.from_arrow(chunks), cfg.model_args(), cfg.resources_args(), args.device,
                       os.path.join(workdir, "stage-shards"))
            rows = sum(b.num_rows for b in ds.iter_batches(batch_format="pyarrow", batch_size=None))
            wall = time.perf_counter() - t0
    finally:
        activations.ActivationExtractor = original
    assert rows == chunks.num_rows, (rows, chunks.num_rows)
    return {"wall_s": wall, "cpu_s": cpu.seconds, **_actor_log(log_path)}


# --------------------------------------------------------------------------------------- main

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--chunks", type=int, default=200, help="chunks in the set (default 200)")
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--min-tokens", type=int, default=64, help="shortest chunk kept (the demo's setting)")
    ap.add_argument("--layers", default="all")
    ap.add_argument("--batch-size", type=int, default=8, help="chunks per forward pass, every method")
    ap.add_argument("--workers", type=int, default=1, help="activation actors in the pipeline")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads (a, b)")
    ap.add_argument("--actor-threads", type=int, default=None,
                    help="force the actor's torch threads (default: the pipeline's choice, cores // workers)")
    ap.add_argument("--num-samples", type=int, default=16, help="k of the pipeline's k-means")
    ap.add_argument("--methods", default="a,P,Pact,b,a",
                    help="order to run them in; a method named twice runs twice (load drift check)")
    ap.add_argument("--nice", type=int, default=15, help="niceness of the whole benchmark (Ray workers: 15)")
    ap.add_argument("--workdir", default=None, help="scratch folder (default: a temp dir, deleted)")
    ap.add_argument("--json", default=None, help="also write the result JSON here")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where every method runs")
    ap.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"],
                    help="model dtype, every method (default: float32 on cpu, bfloat16 on cuda)")
    ap.add_argument("--peak-tflops", type=float, default=None,
                    help="the device's peak dense TFLOP/s in --dtype: model FLOP utilisation is reported against it")
    args = ap.parse_args()
    args.dtype = args.dtype or ("bfloat16" if args.device == "cuda" else "float32")

    if args.nice:
        os.nice(max(0, args.nice - os.nice(0)))
    os.environ.setdefault("COLA_RAY_NO_PROGRESS", "1")
    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
    import torch

    torch.set_num_threads(args.threads)
    workdir = args.workdir or tempfile.mkdtemp(prefix="bench-extraction-")
    os.makedirs(workdir, exist_ok=True)
    t0 = time.perf_counter()
    corpus, chunks = build_chunks(args.model, args.chunks, args.seq_len, args.min_tokens, workdir)
    tokens = [list(t) for t in chunks.column("input_ids").to_pylist()]
    n_tokens = int(sum(len(t) for t in tokens))
    print(f"chunk set: {len(tokens)} chunks, {n_tokens} tokens (mean {n_tokens / len(tokens):.0f}) "
          f"built in {time.perf_counter() - t0:.1f}s; load {load_average()}", flush=True)

    runs: list[dict] = []
    for name in args.methods.split(","):
        with LoadSampler() as load:
            if name == "a":
                r = bare_loop(args.model, tokens, args.layers, args.batch_size, args.device, args.dtype)
            elif name == "b":
                r = naive(args.model, tokens, args.seq_len, args.batch_size, args.device, args.dtype)
            elif name == "P":
                r = pipeline(args, corpus, workdir)
                if r["tokens_embedded"] != n_tokens:
                    print(f"WARNING: pipeline embedded {r['tokens_embedded']} tokens, the set has {n_tokens}")
            elif name == "Pact":
                r = activation_stage(args, chunks, workdir)
            else:
                raise SystemExit(f"--methods: unknown {name!r}")
        r.update(method=name, load_before=load.samples[0], load_after=load.samples[-1],
                 load_mean=round(load.mean, 1), load_max=load.max,
                 tokens_per_s=n_tokens / r["wall_s"], tokens_per_cpu_s=n_tokens / max(r["cpu_s"], 1e-9))
        runs.append(r)
        print(json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()}), flush=True)
    import ray

    if ray.is_initialized():
        ray.shutdown()

    def best(name: str) -> dict | None:
        rs = [r for r in runs if r["method"] == name]
        return max(rs, key=lambda r: r["tokens_per_s"]) if rs else None

    a, p, pact, b = best("a"), best("P"), best("Pact"), best("b")
    tps = {}
    if a:
        tps["a_bare"] = a["tokens_per_s"]
        tps["a_bare_all_runs"] = [r["tokens_per_s"] for r in runs if r["method"] == "a"]
    if b:
        tps["b_naive"] = b["tokens_per_s"]
    if p:
        tps["P_e2e"] = p["tokens_per_s"]
        tps["P_stage"] = n_tokens / p["timings_s"]["ingest+process+activations"]
        tps["P_fwd"] = n_tokens / p["actor_fwd_s"]
    if pact:
        tps["Pact"] = pact["tokens_per_s"]
        tps["Pact_fwd"] = n_tokens / pact["actor_fwd_s"]
    # Per CPU-second (all processes of the method; for P_fwd the actor process inside embed_sorted):
    # far less sensitive than wall time to how much of the shared machine a method happened to get.
    cps = {}
    for key, r in (("a_bare", a), ("b_naive", b), ("P_e2e", p), ("Pact", pact)):
        if r:
            cps[key] = r["tokens_per_cpu_s"]
    if p and p.get("actor_fwd_cpu_s"):
        cps["P_fwd"] = n_tokens / p["actor_fwd_cpu_s"]
    if pact and pact.get("actor_fwd_cpu_s"):
        cps["Pact_fwd"] = n_tokens / pact["actor_fwd_cpu_s"]
    cpu_ratios = {}
    for key in ("P_e2e", "Pact", "P_fwd", "Pact_fwd"):
        if key in cps and "a_bare" in cps:
            cpu_ratios[f"{key}/a"] = cps[key] / cps["a_bare"]
        if key in cps and "b_naive" in cps:
            cpu_ratios[f"{key}/b"] = cps[key] / cps["b_naive"]
    if "a_bare" in cps and "b_naive" in cps:
        cpu_ratios["a/b"] = cps["a_bare"] / cps["b_naive"]
    ratios = {}
    for key in ("P_e2e", "P_stage", "Pact", "P_fwd"):
        if key in tps and a:
            ratios[f"{key}/a"] = tps[key] / tps["a_bare"]
        if key in tps and b:
            ratios[f"{key}/b"] = tps[key] / tps["b_naive"]
    if a and b:
        ratios["a/b"] = tps["a_bare"] / tps["b_naive"]
    # Model FLOP utilisation: 2 FLOPs per parameter per token in the decoder layers the pass runs
    # (the matmuls; embeddings and the LM head are not run). Attention scores are left out (at 256
    # tokens and SmolLM2's width about 4% more), so this understates the FLOPs a little.
    flops_per_token = 2 * a["layer_params"] if a else None
    mfu = ({k: v * flops_per_token / (args.peak_tflops * 1e12) for k, v in tps.items() if not isinstance(v, list)}
           if flops_per_token and args.peak_tflops else {})
    summary = {"bench": "extraction", "model": args.model, "chunks": len(tokens), "tokens": n_tokens,
               "device": args.device, "dtype": args.dtype, "flops_per_token": flops_per_token,
               "peak_tflops": args.peak_tflops, "mfu": {k: round(v, 4) for k, v in mfu.items()},
               "seq_len": args.seq_len, "layers": args.layers, "batch_size": args.batch_size,
               "workers": args.workers, "threads": args.threads, "nice": os.nice(0),
               "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "cpus": os.cpu_count(),
               "tokens_per_s": {k: (round(v, 1) if isinstance(v, float) else [round(x, 1) for x in v])
                                for k, v in tps.items()},
               "ratios": {k: round(v, 3) for k, v in ratios.items()},
               "tokens_per_cpu_s": {k: round(v, 1) for k, v in cps.items()},
               "cpu_ratios": {k: round(v, 3) for k, v in cpu_ratios.items()}, "runs": runs}
    print(json.dumps(summary, default=float))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=1, default=float)

    def cell(table: dict, key: str) -> str:
        return f"{table[key]:.0f}" if key in table else "-"

    def ratio(table: dict, key: str) -> str:
        return f"{table[key]:.2f}" if key in table else "-"

    print("\n| basis | chunks / tokens | a bare | P e2e | P stage | P actor pool | P forward (in actor) | b naive "
          "| P e2e/a | P fwd/a | P e2e/b | a/b | load avg (mean, max) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    loads = f"{max(r['load_mean'] for r in runs):.0f}, {max(r['load_max'] for r in runs):.0f}"
    print(f"| tokens/s (wall) | {len(tokens)} / {n_tokens} | {cell(tps, 'a_bare')} | {cell(tps, 'P_e2e')} "
          f"| {cell(tps, 'P_stage')} | {cell(tps, 'Pact')} | {cell(tps, 'P_fwd')} | {cell(tps, 'b_naive')} "
          f"| {ratio(ratios, 'P_e2e/a')} | {ratio(ratios, 'P_fwd/a')} | {ratio(ratios, 'P_e2e/b')} | {ratio(ratios, 'a/b')} "
          f"| {loads} |")
    print(f"| tokens/CPU-s | {len(tokens)} / {n_tokens} | {cell(cps, 'a_bare')} | {cell(cps, 'P_e2e')} | - "
          f"| {cell(cps, 'Pact')} | {cell(cps, 'P_fwd')} | {cell(cps, 'b_naive')} "
          f"| {ratio(cpu_ratios, 'P_e2e/a')} | {ratio(cpu_ratios, 'P_fwd/a')} | {ratio(cpu_ratios, 'P_e2e/b')} "
          f"| {ratio(cpu_ratios, 'a/b')} | |")
    if mfu:
        print(f"\nmodel FLOP utilisation ({flops_per_token / 1e6:.0f} MFLOP/token, peak {args.peak_tflops:g} TFLOP/s "
              f"{args.dtype}): " + ", ".join(f"{k} {100 * v:.2f}%" for k, v in mfu.items()))
    if not args.workdir:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
