"""Argument groups: the parts of a run's config that each piece of code receives (the
llm-compressor `args/` style), so a helper sees only what it uses and a test can build just that.

The CLI and YAML stay flat (one namespace of flags); `cut(cls, config)` builds a group from the
config's fields of the same names. That is safe against renames, unlike copying fields by
matching names ad hoc: a group field with no config field of its name fails `cut` at once, and
tests/config/test_config.py checks that the groups cover every option of CurateConfig.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


def cut(cls, config):
    """The group `cls` of `config`: every field of `cls` taken from the config field of its name."""
    return cls(**{f.name: getattr(config, f.name) for f in dataclasses.fields(cls)})


@dataclass(frozen=True)
class ModelArgs:
    """The uncompressed model and how its activations become vectors and statistics."""

    model: str
    device: str = "auto"
    dtype: str = "auto"
    layers: str = "all"
    proj_dim: int = 64
    stat_layers: int = 4
    seed: int = 0  # the projection's and sketches' seed


@dataclass(frozen=True)
class CorpusArgs:
    """Where the candidate documents come from and which of them are read."""

    corpus: tuple[str, ...] | list[str]
    text_field: str = "text"
    first_docs: int | None = None
    max_candidates: int | None = None
    sample_fraction: float | None = None
    skip_bad_files: bool = False


@dataclass(frozen=True)
class ProcessingArgs:
    """COLA's processing: rendering (Q&A, chat), quality and near-duplicate filters, chunking."""

    seq_len: int = 2048
    min_tokens: int = 32
    filters: tuple[str, ...] | list[str] = ()
    near_dup_threshold: float = 0.8
    pack: bool = False
    qa_format: bool = False
    qa_template: str | None = None
    qa_fields: tuple[str, ...] | list[str] = ()
    qa_chat: bool = False
    chat_template: str = "auto"
    enable_thinking: str = "auto"
    strict: bool = False


@dataclass(frozen=True)
class CoverageArgs:
    """COLA's source selection: the capabilities of the deployment and their probe sets."""

    capabilities: tuple[str, ...] | list[str] = ()
    deployment: str = "general"
    target: str | None = None
    weights: tuple[str, ...] | list[str] = ()
    probes: tuple[str, ...] | list[str] = ()
    probe_max_docs: int = 64


@dataclass(frozen=True)
class ResourcesArgs:
    """How the model passes are spread: actors, chunks per forward pass, chunks per shard."""

    workers: int = 1
    batch_size: int = 8
    shard_size: int = 64


@dataclass(frozen=True)
class SelectionArgs:
    """Argument group of the selection: the selector, k, the seed, and the selector's own
    parameters: `params` from --selector-params (checked strictly against what the selector
    declares), `flag_params` from the flags that exist for a selector's parameters (cola's
    k-means flags), passed to any selector that declares a parameter of that name."""

    selector: str
    num_samples: int
    seed: int
    allow_fewer: bool
    flag_params: dict
    params: dict
    min_tokens_per_expert: int = 0  # MoE expert coverage (selectors/experts.py)
    allow_more: bool = False

    def params_for(self, spec) -> dict:
        return {**{k: v for k, v in self.flag_params.items() if k in spec.param_names}, **self.params}
