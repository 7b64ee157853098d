"""Typed configs shared by the CLI, YAML files and the Python API.

Each field's `help` metadata is the documentation: the CLI builds its flags from it, so a new
option is one new field. Precedence: field default < YAML file < command-line flag.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any, get_args, get_origin, get_type_hints

from cola_ray.errors import UserError


def opt(default: Any = None, help: str = "", choices: tuple | None = None, **kw) -> Any:
    meta = {"help": help, "choices": choices}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata=meta, **kw)
    return field(default=default, metadata=meta, **kw)


@dataclass
class CurateConfig:
    model: str | None = opt(None, "local HF model folder or hub id (default: the offline demo model)")
    corpus: list[str] = opt([], "file, folder or glob of .jsonl/.jsonl.gz/.json/.parquet/.txt or a "
                            "datasets save_to_disk folder, local or s3://; repeatable")
    out: str | None = opt(None, "output folder or s3://bucket/prefix (default: runs/<name>)")
    num_samples: int = opt(128, "calibration samples to select (= k of k-means)")
    seq_len: int = opt(2048, "maximum tokens per chunk; longer documents are split")
    min_tokens: int = opt(32, "drop chunks shorter than this many tokens")
    text_field: str = opt("text", "field holding the text in json/parquet/datasets records")
    layers: str = opt("all", "decoder layers to pool: 'all', a list like '0,4,8', or '-1'")
    proj_dim: int = opt(64, "dimension of the seeded Gaussian random projection")
    seed: int = opt(0, "seed for projection, k-means and sampling")
    workers: int = opt(1, "activation actors (one GPU each on CUDA machines)")
    batch_size: int = opt(8, "chunks per forward pass (chunks of similar length are batched)")
    device: str = opt("auto", "where activation actors run", ("auto", "cpu", "cuda"))
    dtype: str = opt("auto", "model dtype (auto: bfloat16 on CUDA, float32 on CPU)",
                     ("auto", "float32", "bfloat16", "float16"))
    max_docs: int | None = opt(None, "read at most N documents from each --corpus")
    allow_fewer: bool = opt(False, "select every candidate when there are fewer than --num-samples")
    shard_size: int = opt(64, "chunks per activation shard (the unit of resume after a crash)")
    kmeans_iters: int = opt(25, "k-means iterations per restart")
    kmeans_restarts: int = opt(3, "k-means restarts; the lowest objective is kept")
    kmeans_points_per_centroid: int = opt(256, "train k-means on at most k*N sampled vectors")
    kmeans_mode: str = opt("local", "local: FAISS on the driver; distributed: Lloyd over Ray "
                           "actors holding shards of the vectors", ("local", "distributed"))
    config: str | None = opt(None, "YAML file with any of these options (flags override it)")

    def validate(self) -> "CurateConfig":
        checks = [
            ("num_samples", self.num_samples >= 1), ("seq_len", self.seq_len >= 8),
            ("min_tokens", 1 <= self.min_tokens <= self.seq_len), ("proj_dim", self.proj_dim >= 1),
            ("workers", self.workers >= 1), ("batch_size", self.batch_size >= 1),
            ("shard_size", self.shard_size >= 1), ("kmeans_iters", self.kmeans_iters >= 1),
            ("kmeans_restarts", self.kmeans_restarts >= 1),
            ("max_docs", self.max_docs is None or self.max_docs >= 1),
        ]
        for name, ok in checks:
            if not ok:
                raise UserError(f"--{name.replace('_', '-')} {getattr(self, name)}: out of range")
        for f in dataclasses.fields(self):
            choices = f.metadata.get("choices")
            if choices and getattr(self, f.name) not in choices:
                raise UserError(f"--{f.name.replace('_', '-')} {getattr(self, f.name)!r}: "
                                f"expected one of {', '.join(choices)}")
        return self


def load_yaml(path: str) -> dict:
    import yaml

    if not os.path.isfile(path):
        raise UserError(f"--config {path}: file not found")
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f) or {}
    except yaml.YAMLError as e:
        raise UserError(f"--config {path}: invalid YAML ({str(e).splitlines()[0]})") from e
    if not isinstance(data, dict):
        raise UserError(f"--config {path}: expected a mapping of option: value")
    return data


def base_type(hint):
    """`int | None` -> int; `list[str]` stays list[str]."""
    if get_origin(hint) is list:
        return hint
    args = [a for a in get_args(hint) if a is not type(None)]
    return args[0] if args else hint


def _coerce(cls, name: str, value: Any, source: str) -> Any:
    kind = base_type(get_type_hints(cls)[name])
    if value is None:
        return None
    if get_origin(kind) is list:
        return [str(v) for v in value] if isinstance(value, list) else [str(value)]
    if kind is str:
        return str(value)
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise UserError(f"{source}: {name}={value!r} is not true/false")
    if kind in (int, float):
        try:
            return kind(value)
        except (TypeError, ValueError):
            raise UserError(f"{source}: {name}={value!r} is not a {kind.__name__}") from None
    return value


def build_config(cls, yaml_path: str | None = None, overrides: dict | None = None):
    """Defaults < YAML < overrides (only keys whose value is not None)."""
    names = {f.name for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    if yaml_path:
        for key, value in load_yaml(yaml_path).items():
            key = str(key).replace("-", "_")
            if key not in names:
                raise UserError(f"--config {yaml_path}: unknown option {key!r}")
            values[key] = _coerce(cls, key, value, f"--config {yaml_path}")
        values["config"] = yaml_path
    for key, value in (overrides or {}).items():
        if value is not None:
            values[key] = _coerce(cls, key, value, "command line")
    return cls(**values)
