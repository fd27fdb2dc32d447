# One runtime image for the API, the worker, the payload codec, the one-shot migration and search-attribute
# steps, and the emulator (docker-compose.yml picks the command). Runtime dependencies only (requirements.lock,
# hashed; the dev tools and Temporal's binaries are in requirements-dev.lock), no tests, benchmarks or docs
# (.dockerignore), a non-root user, and a healthcheck in Python (the slim image has no curl).

FROM python:3.11-slim AS dependencies
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
COPY requirements.lock /tmp/requirements.lock
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install --require-hashes --no-deps -r /tmp/requirements.lock

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PATH=/opt/venv/bin:$PATH
RUN useradd --create-home --uid 10001 qbosync
COPY --from=dependencies /opt/venv /opt/venv
WORKDIR /app
COPY --chown=root:root . .
USER qbosync

EXPOSE 8000
# The API's /healthz by default; docker-compose.yml checks the worker (its metrics address) and the codec the
# same way with `python deploy/healthcheck.py worker|codec`.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 CMD ["python", "deploy/healthcheck.py", "api"]
CMD ["uvicorn", "api.main:app", "--host", "0.0.0.0", "--port", "8000"]
