"""The deployment files (jobs/, cluster_configs/, Dockerfile) agree with each other and with
pyproject.toml: one image name and version everywhere, the Ray the code pins, entrypoints that
exist, GPU groups that scale from zero, job configs the CLI accepts. Fast; no cluster, no Docker."""

from __future__ import annotations

import dataclasses
import importlib.util
import py_compile
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
YAML_FILES = sorted([*ROOT.glob("cluster_configs/**/*.yaml"), *ROOT.glob("jobs/**/*.yaml")])
KUBERAY = ROOT / "cluster_configs" / "kuberay"
JOB_SCRIPTS = sorted((ROOT / "jobs").glob("*.py"))
DOCKERFILE_KEYWORDS = {
    "FROM", "RUN", "CMD", "LABEL", "MAINTAINER", "EXPOSE", "ENV", "ADD", "COPY", "ENTRYPOINT",
    "VOLUME", "USER", "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL", "HEALTHCHECK", "SHELL",
}


def load_yaml(path: Path) -> list:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def project_requirements() -> dict[str, Requirement]:
    """Every requirement in pyproject (core and extras), by normalised name."""
    deps = list(PYPROJECT["project"]["dependencies"])
    for extra in PYPROJECT["project"]["optional-dependencies"].values():
        deps += extra
    return {Requirement(d).name.lower(): Requirement(d) for d in deps}


def pinned_version(name: str) -> str:
    (spec,) = project_requirements()[name].specifier
    assert spec.operator == "==", f"pyproject should pin {name} exactly, found {spec}"
    return spec.version


def parse_dockerfile(text: str) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) per instruction: joins `\\` continuations and drops comment lines
    (which Docker also drops inside a continued instruction)."""
    instructions, pending = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        keyword, _, args = (pending + stripped).partition(" ")
        instructions.append((keyword, args.strip()))
        pending = ""
    assert not pending, "Dockerfile ends inside a line continuation"
    return instructions


DOCKERFILE = parse_dockerfile((ROOT / "Dockerfile").read_text())
DOCKER_ARGS = dict(
    args.split("=", 1) if "=" in args else (args, "") for kw, args in DOCKERFILE if kw == "ARG"
)


def kuberay_cluster_specs() -> list[tuple[str, dict]]:
    """RayCluster specs, whether standalone or embedded in a RayJob."""
    specs = []
    for path in sorted(KUBERAY.glob("*.yaml")):
        for doc in load_yaml(path):
            if doc.get("kind") == "RayCluster":
                specs.append((path.name, doc["spec"]))
            elif doc.get("kind") == "RayJob":
                specs.append((path.name, doc["spec"]["rayClusterSpec"]))
    return specs


def images_in(node) -> list[str]:
    """Every `image:` value anywhere in a YAML tree."""
    if isinstance(node, dict):
        return [v for k, v in node.items() if k in ("image", "head_image", "worker_image")] + [
            i for v in node.values() for i in images_in(v)
        ]
    if isinstance(node, list):
        return [i for v in node for i in images_in(v)]
    return []


def rayjob() -> dict:
    return next(d for d in load_yaml(KUBERAY / "rayjob.yaml") if d.get("kind") == "RayJob")


# --- every file parses ---------------------------------------------------------------------


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_yaml_parses_to_mappings(path):
    docs = load_yaml(path)
    assert docs and all(isinstance(d, dict) for d in docs)


def test_aws_launcher_config_passes_rays_own_schema():
    # What `ray up` runs first (defaults merged, then the JSON schema); private, but pinned Ray.
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(load_yaml(ROOT / "cluster_configs" / "aws.yaml")[0]))


def test_job_runtime_env_is_a_valid_ray_runtime_env():
    from ray.runtime_env import RuntimeEnv

    env = load_yaml(ROOT / "jobs" / "runtime_env.yaml")[0]
    RuntimeEnv(**env)  # raises on unknown fields or wrong types
    assert env["env_vars"]["OMP_NUM_THREADS"] == "1"
    assert "AWS_ENDPOINT_URL" in env["env_vars"]
    assert ".venv/" in env["excludes"]


# --- one image, one Ray, one version -------------------------------------------------------


def test_one_image_everywhere_tagged_with_the_package_version():
    images = set(images_in(load_yaml(ROOT / "cluster_configs" / "aws.yaml")))
    for path in KUBERAY.glob("*.yaml"):
        images |= set(images_in(load_yaml(path)))
    assert len(images) == 1, f"cluster configs name different images: {sorted(images)}"
    tag = images.pop().rsplit(":", 1)[1]
    version, _, variant = tag.partition("-")
    assert version == PYPROJECT["project"]["version"]
    assert variant == "gpu", "GPU workers need the gpu variant of the image"


def test_ray_version_matches_the_pin_in_base_image_and_kuberay():
    ray = pinned_version("ray")
    assert DOCKER_ARGS["RAY_VERSION"] == ray
    (base,) = [args for kw, args in DOCKERFILE if kw == "FROM"]
    assert base.startswith("rayproject/ray:${RAY_VERSION}-py3")
    python = "3." + re.search(r"-py3(\d+)-", base).group(1)
    assert SpecifierSet(PYPROJECT["project"]["requires-python"]).contains(python)
    for name, spec in kuberay_cluster_specs():
        assert spec["rayVersion"] == ray, name


def test_docker_pins_do_not_contradict_pyproject():
    """Versions the Dockerfile or constraints-cpu.txt fix must satisfy pyproject's ranges."""
    reqs = project_requirements()
    pins = {"torch": DOCKER_ARGS["TORCH_GPU_VERSION"], "vllm": DOCKER_ARGS["VLLM_VERSION"]}
    for line in (ROOT / "constraints-cpu.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            req = Requirement(line)
            pins[f"{req.name} (constraints-cpu.txt)"] = next(iter(req.specifier)).version
    # Any `name==X` / `name>=X` written literally in the Dockerfile counts too: an exact pin or
    # a bound must itself lie inside pyproject's range.
    literal = re.compile(r"\b([A-Za-z][\w.-]*)\s*(==|>=|<=|~=)\s*(\d[\w.]*)")
    for name, op, version in literal.findall((ROOT / "Dockerfile").read_text()):
        if name.lower() in reqs:
            pins[f"{name} (Dockerfile {op})"] = version
    for label, version in pins.items():
        req = reqs[label.split(" ")[0].lower()]
        assert req.specifier.contains(version, prereleases=True), f"{label} {version} outside {req}"


def test_dockerfile_installs_extras_that_exist():
    extras = set(PYPROJECT["project"]["optional-dependencies"])
    run = " ".join(args for kw, args in DOCKERFILE if kw == "RUN")
    used = {e for group in re.findall(r"\.\[([\w,]+)\]", run) for e in group.split(",")}
    assert {"compress", "eval", "vllm"} <= used <= extras


# --- the Dockerfile itself -------------------------------------------------------------------


def test_dockerfile_is_well_formed():
    keywords = [kw for kw, _ in DOCKERFILE]
    assert set(keywords) <= DOCKERFILE_KEYWORDS, set(keywords) - DOCKERFILE_KEYWORDS
    assert all(kw.isupper() for kw in keywords)
    assert keywords.index("ARG") < keywords.index("FROM"), "ARGs used in FROM must come first"
    assert "VARIANT" in DOCKER_ARGS
    assert "CMD" in keywords or "ENTRYPOINT" in keywords
    # Both variants are handled, and anything else fails the build.
    run = " ".join(args for kw, args in DOCKERFILE if kw == "RUN")
    assert re.search(r"\bgpu\)", run) and re.search(r"\bcpu\)", run) and re.search(r"\*\)", run)


def test_dockerfile_copies_only_what_exists_and_is_not_ignored():
    ignored = {ln.strip().rstrip("/") for ln in (ROOT / ".dockerignore").read_text().splitlines()
               if ln.strip() and not ln.startswith("#")}
    assert {".venv", "runs", ".cache", ".git"} <= ignored
    for kw, args in DOCKERFILE:
        if kw in ("COPY", "ADD"):
            *sources, _dest = [a for a in shlex.split(args) if not a.startswith("--")]
            for src in sources:
                assert (ROOT / src).exists(), f"COPY {src}: no such file"
                assert src.rstrip("/").split("/")[0] not in ignored, f"COPY {src} is .dockerignored"


# --- entrypoints and referenced files ---------------------------------------------------------


def test_rayjob_entrypoint_and_working_dir_resolve():
    spec = rayjob()["spec"]
    paths = [t for t in shlex.split(spec["entrypoint"]) if t.endswith((".py", ".yaml"))]
    assert "jobs/curate.py" in paths
    for path in paths:
        assert (ROOT / path).is_file(), path
    # The job runs from the repository copy inside the image: the Dockerfile's WORKDIR.
    workdir = [args for kw, args in DOCKERFILE if kw == "WORKDIR"][-1]
    assert yaml.safe_load(spec["runtimeEnvYAML"])["working_dir"] == workdir
    for kw, args in DOCKERFILE:
        if kw == "COPY" and "jobs/" in args:
            break
    else:
        pytest.fail("the Dockerfile does not copy jobs/ into the image")


def test_paths_named_in_deploy_files_exist():
    """Usage lines in comments (`python jobs/sweep.py --config jobs/configs/sweep.yaml`) too."""
    files = [*YAML_FILES, *JOB_SCRIPTS, *ROOT.glob("jobs/*.md"), *ROOT.glob("cluster_configs/local/*.sh"),
             ROOT / "Dockerfile"]
    for path in files:
        for ref in re.findall(r"\b((?:jobs|cluster_configs)/[\w./-]+\.(?:py|yaml|sh))\b", path.read_text()):
            assert (ROOT / ref).is_file(), f"{path.relative_to(ROOT)} names missing {ref}"


# --- GPU groups scale from zero ---------------------------------------------------------------


def test_aws_gpu_workers_scale_from_zero_and_head_has_no_gpu():
    config = load_yaml(ROOT / "cluster_configs" / "aws.yaml")[0]
    types = config["available_node_types"]
    gpu = [t for name, t in types.items() if t.get("resources", {}).get("GPU", 0) >= 1]
    assert gpu and all(t["min_workers"] == 0 and t["max_workers"] >= 1 for t in gpu)
    assert types[config["head_node_type"]].get("resources", {}).get("GPU", 0) == 0
    for t in types.values():
        assert t["node_config"].get("IamInstanceProfile"), "nodes need an instance profile for S3"


@pytest.mark.parametrize("name,spec", kuberay_cluster_specs(), ids=[n for n, _ in kuberay_cluster_specs()])
def test_kuberay_gpu_group_scales_from_zero(name, spec):
    assert spec["enableInTreeAutoscaling"] is True
    gpu_groups = [
        g for g in spec["workerGroupSpecs"]
        if any(int(c.get("resources", {}).get("limits", {}).get("nvidia.com/gpu", 0)) >= 1
               for c in g["template"]["spec"]["containers"])
    ]
    assert gpu_groups, f"{name}: no worker group asks for nvidia.com/gpu"
    for g in gpu_groups:
        assert g["minReplicas"] == 0 and g.get("replicas", 0) == 0 and g["maxReplicas"] >= 1
    groups = [spec["headGroupSpec"], *spec["workerGroupSpecs"]]
    pods = [g["template"]["spec"] for g in groups]
    assert all(p.get("serviceAccountName") for p in pods), f"{name}: pods need the S3 service account"


# --- job configs match the CLI's configs ------------------------------------------------------


def config_fields(class_name: str) -> set[str]:
    if importlib.util.find_spec("cola_ray.config") is None:
        pytest.skip("cola_ray.config does not exist yet: cannot check the job YAML's keys")
    module = importlib.import_module("cola_ray.config")
    if not hasattr(module, class_name):
        pytest.skip(f"cola_ray.config has no {class_name} yet")
    return {f.name for f in dataclasses.fields(getattr(module, class_name))}


def test_curate_job_config_keys_are_curate_options():
    path = ROOT / "jobs" / "configs" / "curate.yaml"
    keys = set(load_yaml(path)[0])
    assert keys <= config_fields("CurateConfig"), keys - config_fields("CurateConfig")
    # Values too: types and ranges as the CLI would check them, without running anything.
    config = importlib.import_module("cola_ray.config")
    if hasattr(config, "build_config"):
        config.build_config(config.CurateConfig, str(path)).validate()


def test_sweep_job_config_keys_are_sweep_options():
    config = load_yaml(ROOT / "jobs" / "configs" / "sweep.yaml")[0]
    assert set(config["curate"]) <= config_fields("CurateConfig")
    assert set(config) <= config_fields("SweepConfig"), set(config) - config_fields("SweepConfig")


# --- the job scripts ------------------------------------------------------------------------


@pytest.mark.parametrize("path", JOB_SCRIPTS, ids=lambda p: p.name)
def test_job_scripts_compile(path, tmp_path):
    py_compile.compile(str(path), cfile=str(tmp_path / "x.pyc"), doraise=True)


def load_entrypoint_helper():
    spec = importlib.util.spec_from_file_location("jobs_entrypoint", ROOT / "jobs" / "_entrypoint.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_entrypoint_forwards_config_and_extra_args_and_exit_code(monkeypatch):
    calls = []
    fake_cli = type(sys)("cola_ray.cli")
    fake_cli.main = lambda argv: calls.append(argv) or 3
    monkeypatch.setitem(sys.modules, "cola_ray.cli", fake_cli)
    run = load_entrypoint_helper().run
    assert run("sweep", ["--config", "jobs/configs/sweep.yaml", "--out", "s3://b/x"]) == 3
    assert calls == [["sweep", "--config", "jobs/configs/sweep.yaml", "--out", "s3://b/x"]]


def test_job_script_without_config_fails_with_usage():
    proc = subprocess.run([sys.executable, "jobs/curate.py"], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2 and "--config" in proc.stderr


@pytest.mark.parametrize("command", ["curate", "sweep"])
def test_job_script_help_reaches_the_cli(command):
    # The subcommand exists once its workflow does (cola_ray/workflows/<command>.py).
    for module in ("cola_ray.cli", f"cola_ray.workflows.{command}"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} does not exist yet")
    proc = subprocess.run([sys.executable, f"jobs/{command}.py", "--help"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "--config" in proc.stdout


def test_local_cluster_scripts_are_executable_bash():
    for name in ("start.sh", "stop.sh"):
        path = ROOT / "cluster_configs" / "local" / name
        assert path.stat().st_mode & 0o111, f"{name} is not executable"
        subprocess.run(["bash", "-n", str(path)], check=True)
