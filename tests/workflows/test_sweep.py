"""`cola-ray sweep` end to end on the tiny model through Ray Tune (CPU trials): 2 selectors x
2 recipes x 1 seed, plus a calibration set that cannot calibrate (a row without text: its
trials must fail alone); then a rerun that redoes nothing that finished. A set that does not
exist is refused before any trial."""

from __future__ import annotations

import json
import math
import shutil

import pandas as pd
import pytest

from cola_ray.cli import main
from cola_ray.config import SweepConfig
from cola_ray.errors import UserError
from cola_ray.selectors import calibration_token_ids, read_calibration
from cola_ray.workflows.sweep import finished, plan_trials, resolve, run_sweep
from cola_ray.workflows.trial import token_digest
from tests.conftest import _write_jsonl, code_texts, news_texts

SUITES = ["ppl-news", "humaneval-ll"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep-corpus")
    _write_jsonl(root / "news.jsonl", news_texts()[:12])
    _write_jsonl(root / "code.jsonl", [t[:1200] for t in code_texts(4)])
    (root / "bad-set.jsonl").write_text('{"text": "a row"}\n{"text": ""}\n')  # exists, cannot calibrate
    return root


def _cfg(model, corpus, out, **kw) -> SweepConfig:
    base = dict(model=str(model), out=str(out), selectors=["cola", "random"], recipes=["wanda-50", "gptq-w4a16"],
                seeds=["0"], suites=list(SUITES), eval_limit=2, eval_batch_size=4,
                calibration_sets=[str(corpus / "bad-set.jsonl")],
                curate={"corpus": [str(corpus / "news.jsonl"), str(corpus / "code.jsonl")], "num_samples": 8,
                        "seq_len": 64, "min_tokens": 16, "proj_dim": 16, "kmeans_iters": 10, "kmeans_restarts": 2},
                proxies=["none"])  # the module's sweep fixture scores its sets; reruns need not again
    base.update(kw)
    return SweepConfig(**base)


@pytest.fixture(scope="module")
def sweep(ray_session, tiny_llama, corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep") / "out"
    manifest = run_sweep(_cfg(tiny_llama, corpus, out, proxies=["coverage", "moments"]))
    return out, manifest


def _records(out) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in (out / "trials").glob("*.json")}


def test_every_trial_is_recorded_and_the_bad_set_fails_alone(sweep):
    out, manifest = sweep
    records = _records(out)
    ok = {"dense", "cola-seed0--wanda-50", "cola-seed0--gptq-w4a16", "random-seed0--wanda-50",
          "random-seed0--gptq-w4a16"}
    failed = {k for k in records if k.startswith("set-")}
    assert set(records) == ok | failed and len(failed) == 2
    assert all(records[k]["status"] == "ok" for k in ok), {k: records[k].get("error") for k in ok}
    for k in failed:
        assert records[k]["status"] == "failed" and "a row without text" in records[k]["error"]
    assert manifest["trials"] == {"total": 7, "reused": 0, "run": 7, "ok": 5, "failed": sorted(failed)}
    # one pool (one curate run) served both selectors
    assert [p.name for p in (out / "pool").iterdir()] == ["seed-0"]
    assert {p.name for p in (out / "calibration").iterdir()} == {"cola-seed0", "random-seed0"}
    assert all(r["torch_threads"] == 1 for k, r in records.items() if k in ok)  # = the trial's CPUs


def test_results_table_schema_and_retention_arithmetic(sweep):
    out, _ = sweep
    df = pd.read_csv(out / "results.csv")
    assert pd.read_parquet(out / "results.parquet").shape == df.shape
    assert len(df) == 7 and set(df["status"]) == {"ok", "failed"}
    for col in ("trial", "status", "error", "set", "selector", "seed", "recipe", "calibration", "samples",
                "token_ids_sha256", "sparsity", "time_compress_s", "time_evaluate_s", "time_total_s"):
        assert col in df.columns
    metric = "ppl-news/word_perplexity"
    dense = df.loc[df["trial"] == "dense", f"score:{metric}"].item()
    records = _records(out)
    for row in df[(df["status"] == "ok") & (df["trial"] != "dense")].itertuples():
        r = getattr(row, "_asdict")()
        value = records[row.trial]["scores"][metric]
        assert r[f"_{list(df.columns).index(f'score:{metric}') + 1}"] == pytest.approx(value)
        ret = df.loc[df["trial"] == row.trial, f"retention:{metric}"].item()
        deg = df.loc[df["trial"] == row.trial, f"degradation:{metric}"].item()
        assert ret == pytest.approx(dense / value) and deg == pytest.approx(value / dense - 1)  # lower is better
        assert value != dense  # compression changed the model's numbers
        assert row.samples == 8 and (row.sparsity > 0.45 if row.recipe == "wanda-50" else True)
    failed = df[df["status"] == "failed"]
    assert failed["error"].str.contains("a row without text").all() and failed[f"score:{metric}"].isna().all()
    # every trial's row carries its set's `cola-ray score` proxies (the prediction next to the result)
    scored = df[df["set"].isin(["cola-seed0", "random-seed0"])]
    for col in ("proxy:general/coverage_nn", "proxy:code/moment_error", "proxy:code/hessian_error"):
        assert scored[col].notna().all() and failed[col].isna().all()
    one = json.loads((out / "score" / "seed-0" / "manifest.json").read_text())
    row = next(r for r in one["scores"] if r["set"] == "cola-seed0" and r["capability"] == "code"
               and r["proxy"] == "moment_error")
    assert scored.loc[scored["set"] == "cola-seed0", "proxy:code/moment_error"].iloc[0] == pytest.approx(row["value"])
    assert one["sets"]["cola-seed0"]["statistics_from"] == "pool"  # scored from the pool, no forward pass
    report = (out / "report.md").read_text()
    assert "| wanda-50 | cola | 1 |" in report and "Trials not ok" in report
    for recipe in ("wanda-50", "gptq-w4a16"):
        assert (out / "plots" / f"degradation-{recipe}.png").read_bytes()[:4] == b"\x89PNG"


def test_calibration_token_ids_are_the_selected_texts(sweep, tiny_llama):
    """The sweep's tokenization path: each selected chunk's text, tokenized by the model's
    tokenizer without re-chunking and cut to seq_len, is what the trial compressed on (the
    compress package tests that compress() hands those ids to llm-compressor unchanged)."""
    from transformers import AutoTokenizer

    out, _ = sweep
    tok = AutoTokenizer.from_pretrained(tiny_llama)
    records = _records(out)
    for label in ("cola-seed0", "random-seed0"):
        rows = read_calibration((out / "calibration" / label / "calibration.jsonl").read_text())
        ids = calibration_token_ids([r["text"] for r in rows], tok, 64)
        assert [len(i) for i in ids] == [min(64, r["num_tokens"] + 0) for r in rows]  # curate's chunk, whole
        assert [tok.decode(i) for i in ids] == [r["text"] for r in rows]
        for recipe in ("wanda-50", "gptq-w4a16"):
            cal = records[f"{label}--{recipe}"]["calibration_set"]
            assert cal["token_ids_sha256"] == token_digest(ids) and cal["samples"] == len(rows)


def test_registry_cola_reproduces_curates_selection(sweep):
    from cola_ray import storage
    from cola_ray.selectors import Pool, SelectorContext, get_selector

    out, _ = sweep
    pool = Pool(tuple(storage.list_files(str(out / "pool" / "seed-0" / "work" / "activations"), ".parquet")))
    ctx = SelectorContext(model="unused", seed=0, params={"kmeans_iters": 10, "kmeans_restarts": 2})
    mine = get_selector("cola").select(pool, 8, ctx).table.column("id").to_pylist()
    for folder in (out / "pool" / "seed-0", out / "calibration" / "cola-seed0"):  # curate's run and the sweep's set
        assert mine == [r["id"] for r in read_calibration((folder / "calibration.jsonl").read_text())]


def test_curate_selector_flag_uses_the_same_registry(sweep, tiny_llama, corpus, tmp_path, capsys):
    """`cola-ray curate --selector random` on the sweep's pool reuses its activations and writes
    the same set as the sweep's random selector."""
    out, _ = sweep
    copy = tmp_path / "pool"
    shutil.copytree(out / "pool" / "seed-0", copy)
    args = ["curate", "--model", str(tiny_llama), "--corpus", str(corpus / "news.jsonl"), "--corpus",
            str(corpus / "code.jsonl"), "--out", str(copy), "--num-samples", "8", "--seq-len", "64",
            "--min-tokens", "16", "--proj-dim", "16", "--kmeans-iters", "10", "--kmeans-restarts", "2",
            "--selector", "random"]
    assert main(args) == 0
    assert "selector: random" in capsys.readouterr().out
    assert (copy / "calibration.jsonl").read_text() == (out / "calibration" / "random-seed0" / "calibration.jsonl").read_text()
    manifest = json.loads((copy / "manifest.json").read_text())
    assert manifest["selection"]["selector"] == "random" and manifest["resume"]["rows_new"] == 0


def test_rerun_skips_finished_trials(sweep, tiny_llama, corpus):
    out, first = sweep
    before = {k: (out / "trials" / f"{k}.json").read_text() for k, r in _records(out).items() if r["status"] == "ok"}
    manifest = run_sweep(_cfg(tiny_llama, corpus, out))
    assert manifest["trials"]["reused"] == 5 and manifest["trials"]["run"] == 2  # only the failed ones again
    assert not any(k.startswith("curate pool") for k in manifest["timings_s"])  # no activations recomputed
    assert {k: (out / "trials" / f"{k}.json").read_text() for k in before} == before


def test_other_settings_on_the_same_out_are_refused(sweep, tiny_llama, corpus):
    out, _ = sweep
    with pytest.raises(UserError, match="other settings .*eval_limit"):
        run_sweep(_cfg(tiny_llama, corpus, out, eval_limit=3))


@pytest.mark.parametrize("kw, match", [
    ({"selectors": ["kmeans"]}, "unknown selector 'kmeans'"),
    ({"recipes": ["gptq-w5"]}, "unknown compression recipe 'gptq-w5'"),
    ({"recipe_params": {"wanda-50": {"sparsity": 1.5}}}, "sparsity 1.5"),
    ({"curate": {"seed": 3}}, "not a curate option a sweep shares"),
])
def test_bad_sweep_options_fail_before_any_work(kw, match, tiny_llama, corpus, tmp_path):
    with pytest.raises(UserError, match=match):
        run_sweep(_cfg(tiny_llama, corpus, tmp_path / "out", **kw))
    assert not (tmp_path / "out" / "trials").exists()


@pytest.mark.parametrize("change, match", [
    ({"calibration_sets": ["{tmp}/no-such-set"]}, "no-such-set: no calibration.jsonl there"),
    ({"recipe_params": {"wanda-50": {"sparsity": "half"}}}, "recipe 'wanda-50'"),
    ({"suites": ["ppl-klingon"]}, "ppl-klingon"),
])
def test_bad_sweep_input_through_the_cli_is_one_line_before_any_trial(change, match, tiny_llama, corpus, tmp_path,
                                                                      capsys):
    """A missing calibration set, a recipe parameter of the wrong type, a suite that does not
    exist: exit 2, one `cola-ray: error:` line, no traceback, before any trial (issue 14)."""
    import yaml

    cfg = {"model": str(tiny_llama), "selectors": ["random"], "recipes": ["wanda-50"], "suites": ["ppl-news"],
           "curate": {"corpus": [str(corpus / "news.jsonl")], "num_samples": 4, "seq_len": 64}}
    cfg.update(json.loads(json.dumps(change).replace("{tmp}", str(tmp_path))))
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(cfg))
    out = tmp_path / "out"
    assert main(["sweep", "--config", str(tmp_path / "sweep.yaml"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert last.startswith("cola-ray: error: ") and match in last and "Traceback" not in err, err
    assert not (out / "trials").exists() and not (out / "manifest.json").exists()


def test_changed_recipe_parameters_rerun_only_that_recipes_trials(sweep, tiny_llama, corpus):
    out, _ = sweep
    cfg = resolve(_cfg(tiny_llama, corpus, out))
    from cola_ray.workflows.sweep import curate_template

    specs = plan_trials(cfg, curate_template(cfg))
    assert set(finished(specs)) == {"dense", "cola-seed0--wanda-50", "cola-seed0--gptq-w4a16",
                                    "random-seed0--wanda-50", "random-seed0--gptq-w4a16"}
    cfg.recipe_params = {"gptq-w4a16": {"group_size": 64}}
    reused = set(finished(plan_trials(cfg, curate_template(cfg))))
    assert reused == {"dense", "cola-seed0--wanda-50", "random-seed0--wanda-50"}


def test_grid_with_seeds_shared_pool_and_seed_free_selectors(tiny_llama, corpus, tmp_path):
    cfg = resolve(_cfg(tiny_llama, corpus, tmp_path / "out", selectors=["cola", "random", "lexical"],
                       seeds=["0", "1", "2"], recipes=["wanda-50"], calibration_sets=[]))
    from cola_ray.workflows.sweep import curate_template

    base = curate_template(cfg)
    specs = {s["key"]: s for s in plan_trials(cfg, base)}
    # seed-free selectors get one set (from the first seed's pool), not one per seed
    assert sorted(specs) == sorted(["dense", "lexical--wanda-50"] + [f"{sel}-seed{s}--wanda-50"
                                                                      for sel in ("cola", "random") for s in range(3)])
    assert [specs[f"cola-seed{s}--wanda-50"]["pool_seed"] for s in range(3)] == [0, 1, 2]  # one pool per seed
    cfg.shared_pool = True
    shared = {s["key"]: s for s in plan_trials(cfg, base)}
    assert [shared[f"cola-seed{s}--wanda-50"]["pool_seed"] for s in range(3)] == [0, 0, 0]
    assert [shared[f"cola-seed{s}--wanda-50"]["seed"] for s in range(3)] == [0, 1, 2]
    assert all(s["threads"] == 1 and s["device"] == "cpu" for s in specs.values())


def test_s3_out_and_tune_storage(sweep, tiny_llama, corpus, s3_bucket):
    """An existing calibration set on S3, the sweep's outputs and Tune's experiment on S3."""
    import boto3

    from cola_ray import storage

    out, _ = sweep
    cal = f"s3://{s3_bucket}/sets/cola"
    storage.write_bytes(f"{cal}/calibration.jsonl", (out / "calibration" / "cola-seed0" / "calibration.jsonl").read_bytes())
    s3_out = f"s3://{s3_bucket}/sweeps/s3"
    manifest = run_sweep(_cfg(tiny_llama, corpus, s3_out, selectors=[], calibration_sets=[cal], recipes=["wanda-50"],
                              suites=["ppl-news"], curate={"seq_len": 64}))
    assert manifest["trials"]["ok"] == 2 and manifest["trials"]["failed"] == []
    keys = {o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket=s3_bucket, Prefix="sweeps/s3/")["Contents"]}
    assert {"sweeps/s3/results.csv", "sweeps/s3/report.md", "sweeps/s3/plots/degradation-wanda-50.png",
            "sweeps/s3/trials/dense.json"} <= keys
    assert any(k.startswith("sweeps/s3/tune/") for k in keys)
    [key] = [k for k in keys if k.startswith("sweeps/s3/trials/set-cola-")]
    record = storage.read_json(f"s3://{s3_bucket}/{key}")
    assert record["status"] == "ok" and record["calibration_set"]["samples"] == 8


def test_report_only_runs_nothing_and_lists_the_rest_as_missing(sweep, tiny_llama, corpus):
    out, _ = sweep
    manifest = run_sweep(_cfg(tiny_llama, corpus, out, recipes=["wanda-50", "gptq-w4a16", "rtn-w4a16"],
                              report_only=True))
    assert manifest["trials"]["run"] == 0 and manifest["trials"]["ok"] == 5
    df = pd.read_csv(out / "results.csv")
    assert set(df.loc[df["recipe"] == "rtn-w4a16", "status"]) == {"missing"}
    assert not (out / "trials" / "cola-seed0--rtn-w4a16.json").exists()
