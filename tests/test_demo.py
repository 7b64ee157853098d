"""The offline data's three splits: candidates, probes and evaluation text never share a document."""

from cola_ray import demo, probes


def test_the_three_splits_are_disjoint_and_cover_every_document():
    for domain in demo.DOMAINS:
        parts = {s: demo.domain_documents(domain, s) for s in demo.SPLITS}
        assert 0 < len(parts["probes"]) < len(parts["heldout"]) < len(parts["candidates"]), domain
        for a in demo.SPLITS:
            for b in demo.SPLITS:
                if a < b:
                    assert not set(parts[a]) & set(parts[b]), (domain, a, b)
    evaluated = {p["task_id"] for p in demo.humaneval_problems("heldout")}
    probe_ids = {p["task_id"] for p in demo.humaneval_problems("probes")}
    assert not evaluated & probe_ids and len(evaluated | probe_ids) == len(demo.humaneval_problems("all")) == 164


def test_built_in_probes_come_from_the_probe_split_only():
    evaluated = {t[:500] for d in ("wiki", "news") for s in ("heldout", "candidates") for t in demo.domain_documents(d, s)}
    general = probes._texts("general")
    assert len(general) == len(set(general)) and not {t[:500] for t in general} & evaluated
    solutions = {p["prompt"] + p["canonical_solution"] for p in demo.humaneval_problems("heldout")}
    assert not set(probes._texts("code")) & solutions
