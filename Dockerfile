# One image for every linebus process: the broker, each actor and each simulator of a line run
# from it with different commands (docker-compose.yml). python:3.11-slim plus the package with
# the extras every built-in actor kind needs; no compiler, no cache, a non-root user.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    LINEBUS_LOG_JSON=1

WORKDIR /linebus
COPY pyproject.toml README.md ./
COPY bus ./bus
COPY actors ./actors
COPY clients/*.py ./clients/
RUN pip install '.[all]' \
    && useradd --system --uid 10001 --home-dir /linebus --shell /usr/sbin/nologin linebus \
    # State lives under var/ (relative paths in the configs are from this directory). Named
    # volumes mounted below it start with this ownership, so the user can write to them.
    && mkdir -p var/telemetry var/ingest var/remotelab var/flux var/audit \
    && chown -R linebus:linebus var

USER linebus
# configs/ is mounted from the repository (docker-compose.yml), not baked in. Each service gives
# its whole command: `linebus broker ...`, `linebus actor ...`, `python -m actors.<kind>.simulator`.
CMD ["linebus", "--help"]
