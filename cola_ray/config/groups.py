"""Argument groups: the parts of a run's config that each piece of code receives (the
llm-compressor `args/` style), so a helper sees only what it uses and a test can build just that.

The CLI and YAML stay flat (one namespace of flags); `cut(cls, config)` builds a group from the
config's fields of the same names. That is safe against renames, unlike copying fields by
matching names ad hoc: a group field with no config field of its name fails `cut` at once, and
tests/config/test_config.py checks that the groups cover every option of CurateConfig. The groups
have no defaults of their own: CurateConfig's are the only ones (build a group with
`CurateConfig(...).coverage_args()` and the like).
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
    device: str
    dtype: str
    layers: str
    proj_dim: int
    stat_layers: int
    seed: int  # the projection's and sketches' seed


@dataclass(frozen=True)
class CorpusArgs:
    """Where the candidate documents come from and which of them are read."""

    corpus: list[str]
    text_field: str
    first_docs: int | None
    max_candidates: int | None
    sample_fraction: float | None
    skip_bad_files: bool


@dataclass(frozen=True)
class ProcessingArgs:
    """COLA's processing: rendering (Q&A, chat), quality and near-duplicate filters, chunking."""

    seq_len: int
    min_tokens: int
    filters: list[str]
    near_dup_threshold: float
    pack: bool
    qa_format: bool
    qa_template: str | None
    qa_fields: list[str]
    qa_chat: bool
    chat_template: str
    enable_thinking: str
    strict: bool


@dataclass(frozen=True)
class CoverageArgs:
    """COLA's source selection: the capabilities of the deployment and their probe sets."""

    capabilities: list[str]
    deployment: str
    target: str | None
    weights: list[str]
    probes: list[str]
    probe_max_docs: int


@dataclass(frozen=True)
class ResourcesArgs:
    """How the model passes are spread: actors, chunks per forward pass, chunks per shard."""

    workers: int
    batch_size: int
    shard_size: int


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
