# Huiliu gateway: slim Python, non-root, config mounted at /app/config.yaml, data in a volume.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1

WORKDIR /app
COPY pyproject.toml README.md LICENSE requirements.lock ./
COPY core ./core
COPY connectors ./connectors
COPY normalizer ./normalizer
COPY bot ./bot
COPY gateway ./gateway
COPY kb ./kb
COPY config.yaml ./config.yaml
COPY docker/entrypoint.sh /usr/local/bin/huiliu-entrypoint

RUN pip install -c requirements.lock . \
    && useradd --system --uid 10001 --home-dir /app huiliu \
    && mkdir -p /app/data && chown huiliu:huiliu /app/data

USER huiliu
VOLUME ["/app/data"]

# The image's files belong to root; the gateway runs as uid 10001. So the KB the admin API edits lives in the
# data volume: on a volume's first start `huiliu serve` copies the shipped KB (HUILIU_KB_SEED) to bot.kb
# (HUILIU_KB, which the sample config reads), and never overwrites it after that.
# Listen on all interfaces inside the container; HUILIU_PORT is the sample config's server.port.
ENV HUILIU_HOST=0.0.0.0 \
    HUILIU_PORT=8080 \
    HUILIU_KB=/app/data/kb/faq.yaml \
    HUILIU_KB_SEED=/app/kb/faq.yaml \
    HUILIU_CONFIG=/app/config.yaml
EXPOSE 8080

# Healthy means ready (store reachable, every connector running), asked on the port the config sets.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-m", "gateway.container", "healthcheck"]

# Mount your own config.yaml over /app/config.yaml (keep `kb: ${HUILIU_KB:-kb/faq.yaml}` to edit the KB via the API).
# The entrypoint refuses to serve the sample config without HUILIU_API_TOKEN (and serve refuses a weak token).
ENTRYPOINT ["huiliu-entrypoint"]
CMD ["huiliu", "serve", "-c", "/app/config.yaml"]
