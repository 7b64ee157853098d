"""`cola-ray score` end to end: real tiny model, real files, one Ray session."""

import contextlib
import json
import shutil

import pandas as pd
import pytest

from cola_ray.cli import main
from tests.conftest import _write_jsonl, code_texts, news_texts

COMMON = ["--seq-len", "64", "--min-tokens", "8", "--proj-dim", "16", "--stat-layers", "2",
          "--recipes", "wanda-50,sparsegpt-50,gptq-w4a16", "--recipe-params", "{gptq-w4a16: {group_size: 64}}"]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("score-in")
    code = code_texts(40)
    probes = {"general": _write_jsonl(root / "probe-general.jsonl", [t[:600] for t in news_texts()[200:230]]),
              "code": _write_jsonl(root / "probe-code.jsonl", [t[-600:] for t in code[:20]])}
    sets = {"code-set": _write_jsonl(root / "code-set.jsonl", [t[-500:] for t in code[20:30]]),
            "news-set": _write_jsonl(root / "news-set.jsonl", [t[:500] for t in news_texts()[100:110]])}
    return root, probes, sets


def _probe_flags(probes):
    return [f for cap, p in probes.items() for f in ("--probes", f"{cap}={p}")]


@pytest.fixture(scope="module")
def scored(ray_session, tiny_llama, inputs, tmp_path_factory):
    root, probes, sets = inputs
    out = tmp_path_factory.mktemp("score") / "out"
    before = {n: p.read_bytes() for n, p in sets.items()}
    capture = tmp_path_factory.mktemp("score-stdout") / "stdout.txt"
    with open(capture, "w") as f, contextlib.redirect_stdout(f):
        code = main(["score", "--model", str(tiny_llama), *[f for p in sets.values() for f in ("--calibration", str(p))],
                     *_probe_flags(probes), *COMMON, "--workers", "2", "--out", str(out)])
    assert code == 0
    assert {n: p.read_bytes() for n, p in sets.items()} == before  # scoring never writes into the sets
    return out, capture.read_text()


def _values(df):
    return {(r.set, r.capability, r.proxy, r.recipe): r.value for r in df.fillna("").itertuples()}


def test_outputs_and_the_coverage_proxy_tells_code_from_prose(scored):
    out, stdout = scored
    df = pd.read_csv(out / "scores.csv")
    assert set(df.proxy) == {"coverage_nn", "coverage_share", "moment_error", "hessian_error", "outlier_recall",
                             "layer_error"}
    assert len(df) == 2 * 2 * (5 + 3)  # sets x capabilities x (5 statistics + 3 recipes)
    assert pd.read_parquet(out / "scores.parquet").shape == df.shape
    assert (out / "scores_code.png").stat().st_size > 0 and (out / "scores_general.png").stat().st_size > 0
    v = _values(df)
    assert v[("code-set", "code", "coverage_nn", "")] < v[("news-set", "code", "coverage_nn", "")]
    assert v[("news-set", "general", "coverage_nn", "")] < v[("code-set", "general", "coverage_nn", "")]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["sets"]["code-set"]["statistics_from"] == "forward pass"
    assert manifest["sets"]["code-set"]["truncated"] > 0  # 500 characters > 64 tokens: cut, counted, kept
    assert "coverage_nn" in stdout and "code-set" in stdout


def test_same_scores_with_one_worker_through_the_python_api(scored, tiny_llama, inputs, tmp_path):
    """Probes are always embedded by one actor: the sets' forward pass is what the worker count
    could change, so the rerun reuses the first run's probe pool and Hessians (its cache)."""
    from cola_ray.workflows.score import score

    out, _ = scored
    _, probes, sets = inputs
    shutil.copytree(out / "work", tmp_path / "again" / "work")
    rows = score(str(tiny_llama), [str(p) for p in sets.values()], str(tmp_path / "again"), workers=1,
                 probes=[f"{c}={p}" for c, p in probes.items()], seq_len=64, min_tokens=8, proj_dim=16, stat_layers=2,
                 recipes=["wanda-50", "sparsegpt-50", "gptq-w4a16"], recipe_params={"gptq-w4a16": {"group_size": 64}})
    again = {(r["set"], r["capability"], r["proxy"], r["recipe"]): r["value"] for r in rows}
    first = _values(pd.read_csv(out / "scores.csv"))
    assert again.keys() == first.keys()
    for key, value in first.items():
        assert again[key] == pytest.approx(value, rel=1e-4, abs=1e-6), key


def test_a_curate_folder_is_scored_from_its_pool(ray_session, tiny_llama, ft_reference_out, inputs, tmp_path):
    _, probes, _ = inputs
    out = tmp_path / "out"
    assert main(["score", "--model", str(tiny_llama), "--calibration", str(ft_reference_out), *_probe_flags(probes),
                 "--seq-len", "64", "--min-tokens", "8", "--proj-dim", "16", "--proxies", "coverage,moments",
                 "--out", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    (only,) = manifest["sets"].values()
    assert only["statistics_from"] == "pool" and only["forward_pass_s"] == 0.0
    assert len(pd.read_csv(out / "scores.csv")) == 2 * 5


@pytest.mark.parametrize("case", ["missing", "no-text", "empty", "unknown-recipe"])
def test_bad_sets_are_one_line_and_no_manifest(case, tiny_llama, inputs, tmp_path, capsys):
    root, probes, sets = inputs
    path = tmp_path / "set.jsonl"
    args = ["--calibration", str(path)]
    if case == "no-text":
        path.write_text(json.dumps({"prompt": "x"}) + "\n")
    elif case == "empty":
        path.write_text("")
    elif case == "unknown-recipe":
        args = ["--calibration", str(sets["code-set"]), "--recipes", "nope-50"]
    assert main(["score", "--model", str(tiny_llama), *args, *_probe_flags(probes), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert [ln for ln in err if "error" in ln.lower()] == err[-1:], err  # one line, the last
    expected = {"missing": "not found", "no-text": "no field 'text'", "empty": "empty", "unknown-recipe": "nope-50"}
    assert err[-1].startswith("cola-ray: error: ") and expected[case] in err[-1], err[-1]
    assert not (tmp_path / "out" / "manifest.json").exists()
