# One image for every Smartfleet service; docker-compose.yml picks the command:
#   smartctl scheduler serve | smartctl gateway serve | smartctl node serve
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Debian's Chromium (and fonts so pages render); the node finds it via SMARTFLEET_BROWSER_PATH.
RUN apt-get update \
    && apt-get install -y --no-install-recommends chromium fonts-liberation ca-certificates \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml README.md ./
COPY smartfleet ./smartfleet
COPY services ./services
COPY cli ./cli
COPY demo ./demo
RUN pip install .

RUN useradd --create-home --uid 10001 smartfleet \
    && mkdir -p /data \
    && chown smartfleet:smartfleet /data
USER smartfleet
VOLUME ["/data"]

ENV SMARTFLEET_BROWSER_PATH=/usr/bin/chromium \
    SMARTFLEET_LOG_JSON=true

EXPOSE 50051 50052
CMD ["smartctl", "--help"]
