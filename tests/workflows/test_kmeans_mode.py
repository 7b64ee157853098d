"""`--kmeans-mode distributed` runs the whole curate workflow with Lloyd over Ray actors."""

import json

from cola_ray.workflows.curate import run_curate
from tests.workflows.conftest import ft_config


def test_distributed_kmeans_mode_selects_one_per_cluster(ray_session, tiny_llama, ft_corpus, tmp_path):
    local = run_curate(ft_config(tiny_llama, ft_corpus, tmp_path / "local"))
    dist = run_curate(ft_config(tiny_llama, ft_corpus, tmp_path / "dist", kmeans_mode="distributed", workers=2))
    rows = [json.loads(line) for line in (tmp_path / "dist" / "calibration.jsonl").read_text().splitlines()]
    assert sorted(r["cluster"] for r in rows) == list(range(6))
    assert dist["counts"]["embedded"] == local["counts"]["embedded"]
    # Lloyd from k-means++ vs FAISS with restarts: comparable objectives on the same vectors
    assert dist["selection"]["details"]["objective"] <= 1.25 * local["selection"]["details"]["objective"]
