# gridshift image. Core (API, dispatcher, migrations): `docker build .`
# GPU workers (vLLM, NVML):                         `docker build --build-arg EXTRAS=gpu .`
FROM python:3.11-slim

ARG EXTRAS=""
ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    GRIDSHIFT_DATA_DIR=/data

RUN useradd --create-home --uid 1000 gridshift \
    && mkdir -p /data /etc/gridshift \
    && chown gridshift:gridshift /data

WORKDIR /app
COPY pyproject.toml README.md alembic.ini ./
COPY scheduler ./scheduler
COPY workers ./workers
COPY migrations ./migrations
# Editable install: `gridshift db upgrade` finds alembic.ini and migrations/ beside the package.
RUN pip install -e ".${EXTRAS:+[$EXTRAS]}"

USER gridshift
VOLUME ["/data"]
EXPOSE 8080
CMD ["gridshift", "--help"]
