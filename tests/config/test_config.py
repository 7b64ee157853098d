"""Config parsing shared by flags, YAML and the Python API (cola_ray/config/, cli.py)."""

from __future__ import annotations

import dataclasses

import pytest

from cola_ray.cli import _parser, _config
from cola_ray.config import CurateConfig, SweepConfig, build_config
from cola_ray.errors import UserError


def test_renamed_options_keep_their_old_name_as_flag_and_yaml_key(tmp_path):
    args = _parser().parse_args(["curate", "--max-docs", "3"])
    assert _config(CurateConfig, args).first_docs == 3
    yaml = tmp_path / "c.yaml"
    yaml.write_text("max-docs: 4\n")
    assert build_config(CurateConfig, str(yaml)).first_docs == 4
    yaml.write_text("curate: {max_docs: 5}\n")
    build_config(SweepConfig, str(yaml)).validate()  # a sweep's curate block accepts it too


def test_candidate_budget_options_are_checked():
    with pytest.raises(UserError, match="--sample-fraction 1.5: out of range"):
        CurateConfig(sample_fraction=1.5).validate()
    with pytest.raises(UserError, match="--max-candidates 0: out of range"):
        CurateConfig(max_candidates=0).validate()
    with pytest.raises(UserError, match="give one candidate budget, not both"):
        CurateConfig(max_candidates=10, sample_fraction=0.5).validate()


def test_argument_groups_cover_every_curate_option_and_follow_the_config():
    """Every CurateConfig option reaches the code through one of the argument groups (or is the
    run's own: --out, --config); a group field with no option of its name would fail `cut`."""
    from cola_ray.config import CorpusArgs, CoverageArgs, ModelArgs, ProcessingArgs, ResourcesArgs

    groups = (ModelArgs, CorpusArgs, ProcessingArgs, CoverageArgs, ResourcesArgs)
    grouped = {f.name for g in groups for f in dataclasses.fields(g)}
    selection = {"selector", "num_samples", "seed", "allow_fewer", "min_tokens_per_expert", "allow_more",
                 "kmeans_iters", "kmeans_restarts", "kmeans_points_per_centroid", "kmeans_mode", "selector_params"}
    options = {f.name for f in dataclasses.fields(CurateConfig)}
    assert options - grouped - selection == {"out", "config"}
    assert grouped <= options
    cfg = CurateConfig(model="m", corpus=["c"], seq_len=99, workers=3, probes=["code=x.jsonl"], kmeans_iters=7,
                       text_field="body", proj_dim=5).validate()
    assert cfg.model_args().proj_dim == 5 and cfg.resources_args().workers == 3
    assert cfg.processing_args().seq_len == 99 and cfg.corpus_args().text_field == "body"
    assert cfg.coverage_args().probes == ["code=x.jsonl"]
    assert cfg.selection_args().flag_params["kmeans_iters"] == 7
