# syntax=docker/dockerfile:1
# The image every Ray node runs (cluster_configs/aws.yaml, cluster_configs/kuberay/*.yaml):
# Ray from the official base image, cola-ray with its compress+eval extras, and jobs/ +
# cluster_configs/ so `python jobs/curate.py --config jobs/configs/curate.yaml` works in it.
#   docker build --build-arg VARIANT=gpu -t ghcr.io/cola-ray/cola-ray:0.1.0-gpu .
#   docker build --build-arg VARIANT=cpu -t ghcr.io/cola-ray/cola-ray:0.1.0-cpu .
# The tag's version is pyproject's version; tests/test_deploy_configs.py keeps them in step.

# Must equal the ray==... pin in pyproject.toml: every node and driver needs the same Ray.
ARG RAY_VERSION=2.60.0
# gpu: CUDA torch, faiss-gpu, vllm. cpu: CPU-only torch (smaller image, for CPU-only clusters).
ARG VARIANT=gpu
# -gpu is Ray's alias for its default CUDA 12 build; -cpu is plain Ubuntu. Python 3.11 in both.
FROM rayproject/ray:${RAY_VERSION}-py311-${VARIANT}

ARG VARIANT
# vllm 0.33.0 pins torch==2.14.0 (inside pyproject's >=2.10,<=2.14) and transformers<5.21
# (llmcompressor's <=5.17 still wins); pinning both keeps a rebuild from drifting to newer ones.
ARG TORCH_GPU_VERSION=2.14.0
ARG VLLM_VERSION=0.33.0
ARG FAISS_GPU_VERSION=1.14.1.post1
# constraints-cpu.txt pins the CPU torch (2.13.0), served by PyTorch's CPU-only index.
ARG TORCH_CPU_INDEX=https://download.pytorch.org/whl/cpu

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1

# Created as the image's user (ray), so the in-tree package build below can write here.
RUN mkdir -p /home/ray/cola-ray
WORKDIR /home/ray/cola-ray

# Layer 1, dependencies only: from pyproject alone setuptools builds an empty cola-ray that
# still declares every requirement, so editing code does not reinstall torch and vllm.
COPY --chown=ray:users pyproject.toml README.md constraints-cpu.txt ./
RUN set -eux; \
    case "$VARIANT" in \
      gpu) \
        printf 'torch==%s\nvllm==%s\n' "$TORCH_GPU_VERSION" "$VLLM_VERSION" > /tmp/gpu-constraints.txt; \
        pip install -c /tmp/gpu-constraints.txt ".[compress,eval,vllm]"; \
        # pyproject asks for faiss-cpu; both wheels ship the same `faiss` module, so swap them
        # (pip check will name the missing faiss-cpu: expected in this image).
        pip uninstall -y faiss-cpu; \
        pip install -c /tmp/gpu-constraints.txt "faiss-gpu-cu12==$FAISS_GPU_VERSION" ;; \
      cpu) \
        # Torch first, from the CPU index only: PyPI's torch wheel is a multi-GB CUDA build.
        pip install -c constraints-cpu.txt --index-url "$TORCH_CPU_INDEX" torch; \
        pip install -c constraints-cpu.txt ".[compress,eval]" ;; \
      *) echo "VARIANT must be gpu or cpu, not '$VARIANT'" >&2; exit 1 ;; \
    esac; \
    rm -rf build ./*.egg-info

# Layer 2, the code. The repository copy stays here as the RayJob's working_dir.
COPY --chown=ray:users cola_ray/ cola_ray/
COPY --chown=ray:users jobs/ jobs/
COPY --chown=ray:users cluster_configs/ cluster_configs/
RUN pip install --no-deps . && rm -rf build ./*.egg-info \
    && python -c "import cola_ray, ray, torch; print(cola_ray.__version__, ray.__version__, torch.__version__)"

# No ENTRYPOINT: the cluster launcher runs `docker run IMAGE bash` and KubeRay sets the
# container command to `ray start ...`; an entrypoint would swallow both.
CMD ["cola-ray", "--help"]
