"""The `cola-ray` command: flags/YAML -> a typed config -> a workflow -> a summary.

Flags are generated from the config dataclasses, so `--help` documents every option and YAML
accepts exactly the same names.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import get_origin, get_type_hints

from cola_ray.config import CurateConfig, ScoreConfig, SweepConfig, base_type, build_config
from cola_ray.errors import UserError


def _add_flags(parser: argparse.ArgumentParser, cls) -> None:
    hints = get_type_hints(cls)
    for f in dataclasses.fields(cls):
        flag = "--" + f.name.replace("_", "-")
        flags = [flag, *("--" + a.replace("_", "-") for a in f.metadata.get("aliases", ()))]
        kind = base_type(hints[f.name])
        help_text = f.metadata.get("help", "") + (f" (default: {f.default})" if f.default not in (None, dataclasses.MISSING) else "")
        if kind is bool:
            parser.add_argument(*flags, dest=f.name, action="store_true", default=None, help=help_text)
        elif get_origin(kind) is list:
            parser.add_argument(*flags, dest=f.name, action="append", default=None, help=help_text,
                                metavar="URI" if f.name in ("corpus", "calibration_sets", "calibration") else _singular(f.name.upper()))
        else:
            parser.add_argument(*flags, dest=f.name, type=kind, default=None, choices=f.metadata.get("choices"),
                                help=help_text, metavar=None if f.metadata.get("choices") else f.name.upper())


def _singular(name: str) -> str:
    return name[:-3] + "Y" if name.endswith("IES") else name.rstrip("S")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cola-ray", description="Calibration-data curation for LLM "
                                     "compression (COLA) on Ray.")
    sub = parser.add_subparsers(dest="command", required=True)
    curate = sub.add_parser("curate", help="select a calibration set from candidate corpora",
                            description="Select a calibration set: corpus -> chunks -> activations -> "
                            "k-means -> one representative per cluster. With no --model and no --corpus "
                            "it runs the offline demo (SmolLM2-135M on Wikipedia, news and Python code).")
    _add_flags(curate, CurateConfig)
    sweep = sub.add_parser("sweep", help="compare calibration selectors: compress + evaluate with Ray Tune",
                           description="Grid of (selector or calibration set) x recipe x seed: each trial "
                           "compresses the model on its calibration set and scores it on every suite (Ray Tune, "
                           "one trial per CPU slot or GPU); writes results.csv/.parquet, report.md and plots. "
                           "Rerunning with the same --out skips finished trials.")
    _add_flags(sweep, SweepConfig)
    score = sub.add_parser("score", help="predict how well calibration sets preserve each capability, in seconds",
                           description="Score calibration sets (calibration.jsonl files or curate folders) against "
                           "each capability's probes, without compressing the model: activation coverage, "
                           "statistics match of the compressed layers' inputs, and the layer-wise compression "
                           "error of each recipe. Writes scores.parquet/.csv, a plot per capability, manifest.json.")
    _add_flags(score, ScoreConfig)
    return parser


def _config(cls, args: argparse.Namespace):
    overrides = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if f.name != "config"}
    return build_config(cls, args.config, overrides)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "curate":
            from cola_ray.report import curate_summary
            from cola_ray.workflows.curate import run_curate

            print(curate_summary(run_curate(_config(CurateConfig, args))))
        elif args.command == "sweep":
            from cola_ray.report_sweep import sweep_summary
            from cola_ray.workflows.sweep import run_sweep

            print(sweep_summary(run_sweep(_config(SweepConfig, args))))
        elif args.command == "score":
            from cola_ray.report_score import score_summary
            from cola_ray.workflows.score import run_score

            print(score_summary(run_score(_config(ScoreConfig, args))))
        return 0
    except KeyboardInterrupt:
        print("cola-ray: interrupted; no manifest written (rerun the same command to resume)", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - turned into one line when it is the user's input
        user = find_user_error(e)
        if user is None:
            raise
        print(f"cola-ray: error: {user}", file=sys.stderr)
        return 2


def find_user_error(e: BaseException) -> UserError | None:
    """Ray wraps exceptions raised in tasks; dig the UserError out of the chain. Ray's wrapper
    (RayTaskError(UserError)) prints the task's traceback before the message, and Ray Data
    appends notes after it ("Failed to apply UDF transform ...", "To change retry attempts ..."):
    the message is the first line of the original exception (`cause`)."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, UserError) and isinstance(getattr(e, "cause", None), UserError):
            e = e.cause
        if isinstance(e, UserError):
            lines = [line for line in str(e).splitlines() if line.strip()]
            return UserError(lines[0].strip() if lines else type(e).__name__)
        cause = getattr(e, "cause", None)
        e = cause if isinstance(cause, BaseException) else (e.__cause__ or e.__context__)
    return None


if __name__ == "__main__":
    sys.exit(main())
