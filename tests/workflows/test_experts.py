"""MoE expert coverage end to end (issue 13): the pool's routed-token counts, the manifest and
summary section, the plot, and --min-tokens-per-expert (swaps; --allow-more adds)."""

import json

import numpy as np
import pytest

from cola_ray.cli import main
from cola_ray.pool import Pool
from tests import tinymodels


@pytest.fixture(scope="module")
def moe_model(tmp_path_factory, tiny_tokenizer_dir):
    return tinymodels.build_model(tmp_path_factory.mktemp("mixtral"), "mixtral", tiny_tokenizer_dir)


def _curate(model, corpus, out, *extra):
    args = ["curate", "--model", str(model), "--corpus", str(corpus / "news.jsonl"), "--corpus",
            str(corpus / "code.jsonl"), "--out", str(out), "--seq-len", "48", "--min-tokens", "8",
            "--num-samples", "4", "--proj-dim", "8", "--selector", "random", *extra]
    assert main(args) == 0
    return json.loads((out / "manifest.json").read_text())


@pytest.fixture(scope="module")
def plain(ray_session, moe_model, ft_corpus, tmp_path_factory):
    import contextlib
    import io

    out = tmp_path_factory.mktemp("moe") / "out"
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        m = _curate(moe_model, ft_corpus, out)
    return out, m, err.getvalue()


def _deficit(pool_dir, ids, need):
    pool = Pool.open(str(pool_dir))
    t = pool.read(["expert_tokens"])
    counts = np.array(t.column("expert_tokens").to_pylist())
    row = {c: i for i, c in enumerate(t.column("id").to_pylist())}
    target = np.minimum(counts.sum(0), need)
    return int(np.maximum(target - counts[[row[c] for c in ids]].sum(0), 0).sum())


def _ids(out):
    return [json.loads(x)["id"] for x in (out / "calibration.jsonl").read_text().splitlines()]


def test_pool_and_manifest_report_expert_coverage(plain, capsys):
    out, m, err = plain
    docs = m["counts"]["documents"]
    assert "documents: 100%" in err and f"{docs}/{docs}" in err  # the progress bar had a total
    ex = m["selection"]["experts"]
    assert ex["layers"] == [0, 1, 2] and ex["experts_per_layer"] == [8, 8, 8] and ex["top_k"] == 2
    pool = Pool.open(str(out / "work" / "activations"))
    counts = np.array(pool.read(["expert_tokens"]).column("expert_tokens").to_pylist())
    assert ex["pool"]["tokens"] == int(counts.sum()) and ex["pool"]["tokens_per_expert"]["min"] == counts.sum(0).min()
    assert ex["set"]["tokens"] < ex["pool"]["tokens"]
    assert (out / "expert_coverage.png").read_bytes()[:4] == b"\x89PNG" and "expert_coverage.png" in m["artifacts"]
    assert "min_tokens_per_expert" in ex and "swaps" not in ex


def test_min_tokens_per_expert_swaps_keep_k_and_lower_the_deficit(plain, moe_model, ft_corpus, capsys):
    out, before, _ = plain
    need = int(before["selection"]["experts"]["set"]["tokens_per_expert"]["median"]) + 1
    old = _ids(out)
    m = _curate(moe_model, ft_corpus, out, "--min-tokens-per-expert", str(need))
    ex = m["selection"]["experts"]
    new = _ids(out)
    assert len(new) == 4 == ex["k_final"] == ex["k_before"] and len(set(new)) == 4
    assert ex["swaps"] and {s["out"] for s in ex["swaps"]} <= set(old) and {s["in"] for s in ex["swaps"]} <= set(new)
    pool_dir = out / "work" / "activations"
    assert _deficit(pool_dir, new, need) < _deficit(pool_dir, old, need)
    assert ex["set"]["tokens_per_expert"]["min"] >= ex["before"]["tokens_per_expert"]["min"]
    printed = capsys.readouterr().out
    assert f"--min-tokens-per-expert {need}: {len(ex['swaps'])} swap(s), k=4 kept" in printed


def test_allow_more_adds_until_every_reached_expert_has_enough(plain, moe_model, ft_corpus, capsys):
    out, before, _ = plain
    need = int(before["selection"]["experts"]["set"]["tokens_per_expert"]["median"]) + 1
    m = _curate(moe_model, ft_corpus, out, "--min-tokens-per-expert", str(need), "--allow-more")
    ex = m["selection"]["experts"]
    rows = _ids(out)
    assert ex["k_final"] == len(rows) > 4 == ex["k_before"] and len(ex["added"]) == len(rows) - 4
    assert ex["still_below_min"]["count"] == 0 and _deficit(out / "work" / "activations", rows, need) == 0
    assert f"k grew 4 -> {len(rows)}" in capsys.readouterr().out


def test_score_reports_a_sets_expert_coverage_from_the_pool_and_from_a_forward_pass(plain, moe_model, ft_corpus,
                                                                                   tmp_path, capsys):
    """`cola-ray score` gives a curate folder's coverage from its pool, and a bare file's from a
    forward pass: the same texts, the same counts."""
    out, _, _ = plain
    m = json.loads((out / "manifest.json").read_text())
    texts = tmp_path / "same-texts.jsonl"
    texts.write_text((out / "calibration.jsonl").read_text())
    assert main(["score", "--model", str(moe_model), "--calibration", str(out), "--calibration", str(texts),
                 "--probes", f"general={ft_corpus / 'news.jsonl'}", "--capabilities", "general", "--seq-len", "48",
                 "--min-tokens", "8", "--proj-dim", "8", "--proxies", "coverage", "--out", str(tmp_path / "s")]) == 0
    sets = json.loads((tmp_path / "s" / "manifest.json").read_text())["sets"]
    from_pool, from_pass = (sets[n]["experts"] for n in sorted(sets, key=lambda n: sets[n]["statistics_from"] != "pool"))
    assert from_pool == m["selection"]["experts"]["set"]
    assert from_pass == from_pool
    assert "experts: min" in capsys.readouterr().out


def test_the_sweep_report_table_reads_each_sets_coverage(plain):
    from cola_ray.report_sweep import expert_rows

    out, _, _ = plain
    m = json.loads((out / "manifest.json").read_text())
    (row,) = expert_rows([{"spec": {"calibration": str(out), "label": "moe-set"}},
                          {"spec": {"calibration": str(out), "label": "moe-set"}}])  # one row per set
    assert row[0] == "moe-set" and row[1] == m["selection"]["experts"]["set"]["tokens_per_expert"]["min"]
