"""Reuse an artifact only while the settings it was computed with are unchanged.

One helper for every "reuse if the settings match" decision of a run (activation shards, probe
shards, near-duplicate verdicts, perplexity scores, a sweep's settings): the settings are stored
beside the artifact as canonical JSON in a marker file, and compared key by key, so a refusal
can name what changed.
"""

from __future__ import annotations

import json
from typing import Any

from cola_ray import storage


def canonical(settings: dict) -> dict:
    """The JSON form settings take on disk (tuples become lists, keys strings), so a fresh
    dict compares equal to the one read back."""
    return json.loads(json.dumps(settings, default=str, sort_keys=True))


def changed(old: dict, new: dict) -> list[str]:
    """Keys whose values differ. A key the old settings did not have (an option a newer
    cola-ray added) is not a change; a key that disappeared is. Nested dicts compare per key
    (`curate.seq_len`)."""
    out = []
    for k in sorted(old.keys() | new.keys()):
        if isinstance(old.get(k), dict) and isinstance(new.get(k), dict):
            out += [f"{k}.{c}" for c in changed(old[k], new[k])]
        elif k in old and old.get(k) != new.get(k):
            out.append(k)
    return out


class Marker:
    """The settings marker of one artifact, at `uri` (a JSON file)."""

    def __init__(self, uri: str):
        self.uri = uri

    def read(self) -> dict | None:
        return storage.read_json(self.uri) if storage.exists(self.uri) else None

    def matches(self, settings: dict) -> bool:
        return self.read() == canonical(settings)

    def differences(self, settings: dict) -> list[str]:
        old = self.read()
        return [] if old is None else changed(old, canonical(settings))

    def write(self, settings: dict) -> None:
        storage.write_json(self.uri, canonical(settings))


def cached_json(uri: str, settings: dict, compute) -> Any:
    """`compute()`'s JSON-able result, stored at `uri` with its settings; reused while they match."""
    if storage.exists(uri):
        stored = storage.read_json(uri)
        if stored.get("settings") == canonical(settings):
            return stored["value"]
    value = compute()
    storage.write_json(uri, {"settings": canonical(settings), "value": value})
    return value
