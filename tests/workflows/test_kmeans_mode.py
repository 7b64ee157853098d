"""`--kmeans-mode distributed` runs the whole curate workflow with Lloyd over Ray actors."""

import json
import shutil

from cola_ray.workflows.curate import run_curate
from tests.workflows.conftest import ft_config


def test_distributed_kmeans_mode_selects_one_per_cluster(tiny_llama, ft_corpus, ft_reference_out, tmp_path):
    """On the reference run's pool (copied, so only selection runs again): the same chunks, one
    sample per cluster, and an objective comparable to the local FAISS run's."""
    local = json.loads((ft_reference_out / "manifest.json").read_text())
    shutil.copytree(ft_reference_out / "work", tmp_path / "dist" / "work")
    dist = run_curate(ft_config(tiny_llama, ft_corpus, tmp_path / "dist", kmeans_mode="distributed", workers=2))
    rows = [json.loads(line) for line in (tmp_path / "dist" / "calibration.jsonl").read_text().splitlines()]
    assert sorted(r["cluster"] for r in rows) == list(range(6))
    assert dist["counts"]["embedded"] == local["counts"]["embedded"]
    # Lloyd from k-means++ vs FAISS with restarts: comparable objectives on the same vectors
    assert dist["selection"]["details"]["objective"] <= 1.25 * local["selection"]["details"]["objective"]
