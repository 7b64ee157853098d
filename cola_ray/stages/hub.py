"""`--corpus hf://datasets/ORG/NAME[@revision][/config][:split]`: a Hugging Face dataset by name.

The dataset's files are found by `datasets` itself (`load_dataset_builder`: the `configs` of
the repository's README, or its default file patterns), so a config or split means exactly what
it means to `load_dataset`; cola-ray then reads those files with its own per-file readers (one
task per file, local or through huggingface_hub's filesystem), like any other corpus.

Offline: `COLA_RAY_HF_MIRROR=/folder` maps `hf://datasets/ORG/NAME` to the dataset repository
folder `/folder/ORG/NAME` (a clone: data files plus a README with `configs`), resolved the same
way; `@revision` then names the folder `/folder/ORG/NAME@revision`. Without a mirror and without
a reachable hub, the run stops with one line saying so.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from cola_ray.errors import UserError

MIRROR_ENV = "COLA_RAY_HF_MIRROR"
GRAMMAR = "hf://datasets/ORG/NAME[@revision][/config][:split]"
_NAME = r"[A-Za-z0-9][\w.-]*"
_URI = re.compile(rf"^hf://datasets/(?P<org>{_NAME})/(?P<name>{_NAME})(?:@(?P<revision>[\w.-]+))?"
                  rf"(?:/(?P<config>{_NAME}))?(?::(?P<split>{_NAME}))?$")


@dataclass(frozen=True)
class HubDataset:
    uri: str
    org: str
    name: str
    revision: str | None
    config: str | None
    split: str | None

    @property
    def label(self) -> str:
        """The source label: NAME, plus the config and split when the URI names them."""
        return "-".join(p for p in (self.name, self.config, self.split) if p)


def is_hub(uri: str) -> bool:
    return uri.startswith("hf://")


def parse(uri: str, flag: str = "--corpus ") -> HubDataset:
    m = _URI.match(uri)
    if not m:
        raise UserError(f"{flag}{uri}: not a Hugging Face dataset URI (expected {GRAMMAR})")
    return HubDataset(uri, **m.groupdict())


def _where(ds: HubDataset, flag: str) -> tuple[str, str | None]:
    """(what `datasets` loads: a mirror folder or ORG/NAME, the revision to ask the hub for)."""
    mirror = os.environ.get(MIRROR_ENV)
    if not mirror:
        return f"{ds.org}/{ds.name}", ds.revision
    folder = os.path.join(mirror, ds.org, ds.name + (f"@{ds.revision}" if ds.revision else ""))
    if not os.path.isdir(folder):
        raise UserError(f"{flag}{ds.uri}: not in the mirror {MIRROR_ENV}={mirror} (no folder {folder})")
    return folder, None


def data_files(uri: str, flag: str = "--corpus ") -> tuple[str, list[str]]:
    """(source label, the files of the URI's config and split); `flag` names the option in
    messages."""
    import datasets

    ds = parse(uri, flag)
    path, revision = _where(ds, flag)
    try:
        builder = datasets.load_dataset_builder(path, ds.config, revision=revision)
    except ValueError as e:  # an unknown config: datasets lists the available ones
        raise UserError(f"{flag}{uri}: {str(e).splitlines()[0]}") from None
    except Exception as e:  # noqa: BLE001 - connection, offline mode, not found, gated: all one line
        first = str(e).splitlines()[0] if str(e) else ""
        raise UserError(f"{flag}{uri}: cannot load it from the Hugging Face hub ({type(e).__name__}: {first}); "
                        f"offline, set {MIRROR_ENV} to a folder of dataset repositories (ORG/NAME)") from None
    splits = dict(builder.config.data_files or {})
    split = ds.split or ("train" if "train" in splits else (next(iter(splits)) if len(splits) == 1 else None))
    if split not in splits:
        what = f"no split {ds.split!r}" if ds.split else "several splits and none named"
        raise UserError(f"{flag}{uri}: {what} (splits: {', '.join(sorted(splits)) or 'none'}); "
                        f"add :SPLIT ({GRAMMAR})")
    return ds.label, [str(f) for f in splits[split]]
