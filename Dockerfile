# gridshift image. Core (API, dispatcher, migrations): `docker build .`
# GPU workers (vLLM, NVML):                         `docker build --build-arg EXTRAS=gpu .`
FROM python:3.11-slim

ARG EXTRAS=""
ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    GRIDSHIFT_DATA_DIR=/data

RUN useradd --create-home --uid 1000 gridshift \
    && mkdir -p /data /etc/gridshift /hf-cache \
    && chown gridshift:gridshift /data /hf-cache

WORKDIR /app
COPY pyproject.toml README.md alembic.ini ./
COPY deploy/constraints.txt ./deploy/constraints.txt
COPY scheduler ./scheduler
COPY workers ./workers
COPY migrations ./migrations
# Editable install: `gridshift db upgrade` finds alembic.ini and migrations/ beside the package.
# Every package at the version pinned in deploy/constraints.txt (scripts/lock_constraints.py).
RUN pip install -c deploy/constraints.txt -e ".${EXTRAS:+[$EXTRAS]}"

USER gridshift
VOLUME ["/data"]
EXPOSE 8080
CMD ["gridshift", "--help"]
