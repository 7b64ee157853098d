"""Config parsing shared by flags, YAML and the Python API (cola_ray/config.py, cli.py)."""

from __future__ import annotations

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
