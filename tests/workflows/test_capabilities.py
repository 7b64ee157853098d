"""Capability-aware curation end to end on the tiny model: stage 1 (coverage, weights, quotas
that stage 3 honours) and stage 2 (filters, near-dedup, Q&A format) in one run, then the same
pool re-weighted for a targeted deployment.

The tiny model has random weights: its activation similarity barely tells prose from code
(measured: code source vs code probes 0.650, news vs code probes 0.657), so the ranking these
tests check is carried by the token-unigram part of coverage, which separates them clearly. The
corpora are built to be distinct: news prose, the *bodies* of stdlib modules (their first
kilobytes are mostly docstring prose), and hand-written math Q&A.
"""

import dataclasses
import json
import shutil
import sysconfig
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from cola_ray import demo
from cola_ray.cli import main
from cola_ray.config import CurateConfig
from cola_ray.pool import Pool
from cola_ray.report import curate_summary
from cola_ray.workflows.curate import SHARDS, run_curate
from tests.conftest import _write_jsonl

QA = [
    {"question": "A baker makes 24 muffins and sells three boxes holding six muffins each. How many are left?",
     "answer": "Three boxes hold 3 * 6 = <<3*6=18>>18 muffins. That leaves 24 - 18 = <<24-18=6>>6 muffins.\n#### 6"},
    {"question": "Maria reads 15 pages of her novel every evening. The book has 180 pages. After how many "
                 "evenings does she finish it?",
     "answer": "She needs 180 / 15 = <<180/15=12>>12 evenings to read every page.\n#### 12"},
    {"question": "A train leaves at 9:40 and the journey lasts 2 hours and 35 minutes. When does it arrive?",
     "answer": "Adding two hours gives 11:40; thirty-five more minutes brings the clock to 12:15.\n#### 12:15"},
    {"problem": "Solve for x: 3x + 7 = 25, and check the result by substitution.",
     "solution": "Subtract seven from both sides to get 3x = 18, then divide by three, so $x = \\boxed{6}$."},
    {"question": "Tom has twice as many marbles as Jerry, and together they own 45 marbles. How many are Tom's?",
     "answer": "Let Jerry own j marbles; then j + 2j = 45, so j = 15 and Tom owns 2 * 15 = <<2*15=30>>30.\n#### 30"},
    {"question": "A rectangular garden measures 12 metres by 8 metres. What length of fence surrounds it?",
     "answer": "The perimeter is 2 * (12 + 8) = <<2*(12+8)=40>>40 metres of fencing.\n#### 40"},
    {"instruction": "Convert 3.5 kilograms into grams and explain the conversion factor used.",
     "output": "One kilogram equals one thousand grams, so 3.5 kilograms is 3.5 * 1000 = 3500 grams."},
    {"question": "Lena saves 8 dollars each week for a bicycle that costs 200 dollars. She already has 40 "
                 "dollars. How many weeks must she keep saving?",
     "answer": "She still needs 200 - 40 = <<200-40=160>>160 dollars: 160 / 8 = <<160/8=20>>20 weeks.\n#### 20"},
    {"problem": "What is the sum of the interior angles of a hexagon, in degrees?",
     "solution": "A polygon with n sides has angles summing to (n - 2) * 180 degrees; six sides give $\\boxed{720}$."},
    {"question": "A shop discounts a 60 euro jacket by 25 percent. What does the jacket cost after the discount?",
     "answer": "A quarter of 60 is 15, and 60 - 15 = <<60-15=45>>45 euros remain to pay.\n#### 45"},
]
BROKEN = ("Élodie a visité le musée près de l'église, où les élèves étudièrent l'été dernier avec leur "
          "professeur préféré.").encode().decode("latin-1")  # UTF-8 read as Latin-1: mojibake
SPAM = "Buy cheap watches today! " * 20


def code_bodies(files: slice) -> list[str]:
    """~1,500 characters from the middle of stdlib modules: code, not the docstring at the top."""
    out = []
    for p in sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py"))[files]:
        text = p.read_text(encoding="utf-8", errors="replace")
        start = text.find("\n", len(text) // 2) + 1
        out.append(text[start:start + 1500])
    return out


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    root = tmp_path_factory.mktemp("capabilities")
    news = demo.domain_documents("news", "candidates")[:30]  # the built-in general probes are held out
    copy = news[1].split()
    copy[len(copy) // 2] = "zebra"
    # repeated documents (a crawl's): once used to read a dropped row's null vector in the
    # targeted run's coverage step (issue 14)
    _write_jsonl(root / "news.jsonl", news + [" ".join(copy), SPAM, BROKEN * 2, news[3], news[3]])
    code = code_bodies(slice(-12, None))
    _write_jsonl(root / "code.jsonl", code + code[:1])
    with open(root / "qa.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in QA)
    probes = code_bodies(slice(-40, -29))  # other modules than the source
    _write_jsonl(root / "code_probes.jsonl", probes + probes[:1])  # a repeated probe is one probe
    return root


def _cfg(model, corpora, out, **kw) -> CurateConfig:
    base = dict(model=str(model), corpus=[str(corpora / f"{s}.jsonl") for s in ("news", "code", "qa")],
                out=str(out), num_samples=12, seq_len=64, min_tokens=8, proj_dim=16, kmeans_iters=10,
                kmeans_restarts=2, capabilities=["general,code"], probes=[f"code={corpora / 'code_probes.jsonl'}"],
                probe_max_docs=12)
    base.update(kw)
    return CurateConfig(**base)


@pytest.fixture(scope="module")
def general_run(ray_session, tiny_llama, corpora, tmp_path_factory):
    out = tmp_path_factory.mktemp("general") / "out"
    return out, run_curate(_cfg(tiny_llama, corpora, out))


@pytest.fixture(scope="module")
def targeted_run(general_run, tiny_llama, corpora, tmp_path_factory):
    """The same pool re-weighted: the general run's work/ (shards, probes, near-dup verdicts)
    is reused, so only coverage and clustering run again."""
    out = tmp_path_factory.mktemp("targeted") / "out"
    shutil.copytree(general_run[0] / "work", out / "work")
    # through the CLI, as issue 14's row gives it: --capabilities code,general --deployment targeted --target code
    cfg = _cfg(tiny_llama, corpora, out)
    args = ["curate", "--model", cfg.model, "--out", str(out), "--num-samples", str(cfg.num_samples),
            "--seq-len", "64", "--min-tokens", "8", "--proj-dim", "16", "--kmeans-iters", "10", "--kmeans-restarts",
            "2", "--capabilities", "code,general", "--probes", cfg.probes[0], "--probe-max-docs", "12",
            "--deployment", "targeted", "--target", "code"]
    for corpus in cfg.corpus:
        args += ["--corpus", corpus]
    assert main(args) == 0
    return out, json.loads((out / "manifest.json").read_text())


def _selected(out) -> dict[str, int]:
    counts: dict[str, int] = {}
    for line in (out / "calibration.jsonl").read_text().splitlines():
        src = json.loads(line)["source"]
        counts[src] = counts.get(src, 0) + 1
    return counts


def test_coverage_matrix_ranks_the_matching_source_first(general_run):
    _, manifest = general_run
    caps = manifest["capabilities"]
    cov, tok = caps["coverage"], caps["token_similarity"]
    assert set(cov) == {"news", "code", "qa"} and all(set(row) == {"general", "code"} for row in cov.values())
    for part in (cov, tok):
        assert max(part, key=lambda s: part[s]["code"]) == "code"
        assert max(part, key=lambda s: part[s]["general"]) == "news"
    assert caps["probes"]["general"]["builtin"] and caps["probes"]["code"]["builtin"] is None
    assert all(caps["probes"][c]["chunks"] > 0 for c in ("general", "code"))
    probe_rows = Pool.open(str(general_run[0] / "work/probes")).ledger().select(["source", "drop"]).to_pylist()
    assert {"source": "code", "drop": "duplicate"} in probe_rows


def test_general_run_selects_exactly_the_quotas(general_run):
    out, manifest = general_run
    caps = manifest["capabilities"]
    assert caps["weights"] == {"general": 1.0, "code": 1.0}
    quotas = caps["quotas"]
    assert sum(quotas.values()) == 12 and quotas["code"] > 0 and quotas["news"] > 0
    assert _selected(out) == {s: q for s, q in quotas.items() if q}
    assert {g["source"]: g["k"] for g in manifest["selection"]["details"]["groups"]} == {s: q for s, q in quotas.items() if q}
    assert np.load(out / "centroids.npy").shape == (12, 16)
    emb = pq.read_table(out / "embeddings").to_pylist()
    with_quota = {s for s, q in quotas.items() if q}
    assert len(emb) == sum(v["embedded"] for s, v in manifest["counts"]["per_source"].items() if s in with_quota)
    groups = {g["source"]: g for g in manifest["selection"]["details"]["groups"]}
    offsets, start = {}, 0
    for s in sorted(groups):
        offsets[s], start = start, start + groups[s]["k"]
    for row in emb:  # every clustered chunk sits in a cluster of its own source's group
        assert offsets[row["source"]] <= row["cluster"] < offsets[row["source"]] + groups[row["source"]]["k"]
    summary = curate_summary(manifest)
    assert "coverage (general deployment):" in summary and "quota" in summary
    assert (out / "activation_space.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "activation_space.png" in manifest["artifacts"]


def test_targeted_run_gives_the_code_source_most_samples(general_run, targeted_run):
    out, manifest = targeted_run
    caps = manifest["capabilities"]
    assert caps["weights"] == {"general": 0.2, "code": 1.0}
    assert sum(caps["quotas"].values()) == 12 and caps["quotas"]["code"] > 6
    assert caps["quotas"]["code"] > general_run[1]["capabilities"]["quotas"]["code"]
    assert _selected(out) == {s: q for s, q in caps["quotas"].items() if q}
    assert manifest["resume"]["rows_new"] == 0  # nothing embedded twice


def test_filters_and_near_dedup_drop_what_they_should(general_run):
    _, manifest = general_run
    dropped = manifest["counts"]["dropped"]
    assert dropped["near_duplicate"] == 1 and dropped["repetitive"] == 1 and dropped["broken_encoding"] == 1
    assert manifest["counts"]["per_source"]["news"]["documents"] == 35  # dropped documents still count
    assert dropped["duplicate"] >= 3  # the repeated documents (two in news, one in code), dropped before chunking
    assert manifest["processing"]["near_dup"] == {"threshold": 0.8, "documents": 1}


def test_qa_records_are_rendered_with_a_reasoning_section(general_run):
    out, _ = general_run
    shards = pq.read_table(out / SHARDS, columns=["id", "source", "text", "drop"]).to_pylist()
    first_chunks = sorted(r["text"] for r in shards if r["source"] == "qa" and r["id"].endswith("#0") and not r["drop"])
    assert first_chunks and all(t.startswith("Question: ") for t in first_chunks)
    joined = "".join(r["text"] for r in sorted(shards, key=lambda r: r["id"]) if r["source"] == "qa")
    assert "Question: A shop discounts a 60 euro jacket by 25 percent." in joined
    assert "Reasoning: A quarter of 60 is 15, and 60 - 15 = 45 euros remain to pay.\nAnswer: 45" in joined


@pytest.mark.parametrize("case", ["missing-probes", "unknown-weight", "template-field", "target-unknown"])
def test_bad_capability_options_are_one_line_and_no_manifest(case, tiny_llama, corpora, tmp_path, capsys):
    out = tmp_path / "out"
    cfg = _cfg(tiny_llama, corpora, out)
    args = ["curate", "--model", cfg.model, *sum((["--corpus", c] for c in cfg.corpus), []), "--out", str(out),
            "--seq-len", "64", "--min-tokens", "8", "--capabilities", "general,code", "--probes", cfg.probes[0]]
    args, expect = {
        "missing-probes": (args + ["--capabilities", "math"], "--capabilities math: no probe set; pass --probes math="),
        "unknown-weight": (args + ["--weights", "code=2,math=1"], "--weights math=1: unknown capability 'math'"),
        "template-field": (args + ["--qa-template", "Q: {question}\\nHint: {hint}\\nA: {answer}"],
                           "source 'qa': template field 'hint' not in records"),
        "target-unknown": (args + ["--deployment", "targeted", "--target", "math"], "--target math:"),
    }[case]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("cola-ray: error: ") and expect in err[-1], err[-1]
    assert not (out / "manifest.json").exists()


def test_capability_options_without_capabilities_are_refused(tiny_llama, corpora, tmp_path):
    from cola_ray.errors import UserError

    cfg = dataclasses.replace(_cfg(tiny_llama, corpora, tmp_path / "out"), capabilities=[], deployment="targeted",
                              target="code", probes=[])
    with pytest.raises(UserError, match="--target: needs --capabilities"):
        run_curate(cfg)


def test_options_resolve_weights_and_built_in_probe_sets():
    from cola_ray.workflows.capabilities import parse_options

    opts = parse_options(CurateConfig(capabilities=["general,code", "math"], deployment="targeted", target="math",
                                      weights=["code=0.5"], probes=["math=s3://b/gsm8k.jsonl"]).coverage_args())
    assert opts.weights == {"general": 0.2, "code": 0.5, "math": 1.0}
    assert opts.probe_uris["math"] == ["s3://b/gsm8k.jsonl"] and set(opts.builtin) == {"general", "code"}
    for cap in ("general", "code"):
        texts = [json.loads(line)["text"] for line in Path(opts.probe_uris[cap][0]).read_text().splitlines()]
        assert len(texts) > 15 and all(t.strip() for t in texts) and len(set(texts)) == len(texts)
    assert parse_options(CurateConfig().coverage_args()) is None


@pytest.mark.parametrize("selector", ["random", "lexical"])
def test_every_selector_draws_exactly_the_quotas(general_run, selector, tiny_llama, corpora, tmp_path):
    """COLA's source selection is applied by the selection layer for any selector: the same
    pool (reused, nothing embedded again), the same quotas, another way to pick within them."""
    out = tmp_path / selector
    shutil.copytree(general_run[0] / "work", out / "work")
    manifest = run_curate(_cfg(tiny_llama, corpora, out, selector=selector))
    quotas = manifest["capabilities"]["quotas"]
    assert quotas == general_run[1]["capabilities"]["quotas"] and manifest["resume"]["rows_new"] == 0
    assert _selected(out) == {s: q for s, q in quotas.items() if q}
    assert manifest["selection"]["quotas"] == quotas and manifest["selection"]["selector"] == selector
    assert set(manifest) == set(general_run[1])  # one manifest shape for every selector
    assert "coverage (general deployment):" in curate_summary(manifest)
