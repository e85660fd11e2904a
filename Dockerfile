# syntax=docker/dockerfile:1
#
# Distillery image: one image for the API (uvicorn), the Celery worker and the
# one-shot Alembic migration job; docker-compose.yml picks the command.

# ---------------------------------------------------------------------------
# Builder: resolve and install everything into a self-contained venv.
# ---------------------------------------------------------------------------
FROM python:3.11-slim AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

# The CPU wheel by default; the GPU worker's image passes a CUDA wheel index instead.
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

# torch first and from the CPU-only index: the default PyPI wheel pulls in
# several GiB of CUDA libraries that this service never uses. Being its own
# layer, it stays cached while the application code changes.
RUN pip install --upgrade pip \
 && pip install --index-url "$TORCH_INDEX" torch==2.13.0

WORKDIR /src
COPY pyproject.toml README.md ./
COPY distillery/ ./distillery/
COPY domain/ ./domain/
COPY app/ ./app/
COPY worker/ ./worker/
COPY distillery_cli/ ./distillery_cli/
COPY distillery_client/ ./distillery_client/
COPY alembic/ ./alembic/
COPY alembic.ini ./

# Non-editable install: the venv must not point back into /src.
# torch==2.13.0+cpu is already present and satisfies the dependency.
RUN pip install /src

# ---------------------------------------------------------------------------
# Runtime: just the venv and the sources, run as an unprivileged user.
# ---------------------------------------------------------------------------
FROM python:3.11-slim AS runtime

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    DISTILLERY_HOME=/var/lib/distillery \
    DISTILLERY_ARTIFACT_DIR=/var/lib/distillery/artifacts \
    DISTILLERY_LOG_FORMAT=json

RUN groupadd --system --gid 10001 distillery \
 && useradd --system --uid 10001 --gid distillery \
        --home-dir /var/lib/distillery --no-create-home \
        --shell /usr/sbin/nologin distillery \
 && mkdir -p /var/lib/distillery/artifacts \
 && chown -R distillery:distillery /var/lib/distillery

COPY --from=builder /opt/venv /opt/venv

# Sources stay root-owned (read-only for the service user). alembic.ini and
# alembic/ are needed at runtime by the migrate job (`alembic upgrade head`).
WORKDIR /app
COPY --from=builder /src/distillery/ ./distillery/
COPY --from=builder /src/domain/ ./domain/
COPY --from=builder /src/app/ ./app/
COPY --from=builder /src/worker/ ./worker/
COPY --from=builder /src/distillery_cli/ ./distillery_cli/
COPY --from=builder /src/distillery_client/ ./distillery_client/
COPY --from=builder /src/alembic/ ./alembic/
COPY --from=builder /src/alembic.ini ./

USER distillery

EXPOSE 8000

# The API's check (ready: database, broker and artifact store answer); docker-compose.yml gives
# workers and the reaper their own.
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=8).status == 200 else 1)"]

# `distillery serve` rather than bare uvicorn: its logs (startup, errors) go through the same
# JSON handler as the request lines.
CMD ["distillery", "serve", "--host", "0.0.0.0", "--port", "8000"]
