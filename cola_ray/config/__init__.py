"""Typed configs shared by the CLI, YAML files and the Python API: one flat config per command
(curate.py, sweep.py, score.py), the argument groups cut from curate's (groups.py), and the
machinery that builds them from defaults, YAML and flags (fields.py)."""

from cola_ray.config.curate import CurateConfig
from cola_ray.config.fields import (YamlDict, base_type, build_config, check_choices, coerce, field_name, load_yaml, opt,
                                   split_list)
from cola_ray.config.groups import (CorpusArgs, CoverageArgs, ModelArgs, ProcessingArgs, ResourcesArgs,
                                    SelectionArgs, cut)
from cola_ray.config.score import PROXIES, ScoreConfig
from cola_ray.config.sweep import SWEEP_OWNS, SweepConfig

__all__ = ["CurateConfig", "SweepConfig", "ScoreConfig", "SWEEP_OWNS", "PROXIES", "YamlDict", "base_type", "build_config", "coerce",
           "check_choices", "field_name", "load_yaml", "opt", "split_list", "cut", "CorpusArgs", "CoverageArgs",
           "ModelArgs", "ProcessingArgs", "ResourcesArgs", "SelectionArgs"]
