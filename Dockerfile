# Huiliu gateway: slim Python, non-root, config mounted at /app/config.yaml, data in a volume.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1

WORKDIR /app
COPY pyproject.toml README.md requirements.lock ./
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
EXPOSE 8080
VOLUME ["/app/data"]

HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
    CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2).status == 200 else 1)"

# Mount your own config.yaml over /app/config.yaml; listen on all interfaces inside the container.
# The entrypoint refuses to serve the sample config without HUILIU_API_TOKEN (and serve refuses a weak token).
ENV HUILIU_HOST=0.0.0.0
ENTRYPOINT ["huiliu-entrypoint"]
CMD ["huiliu", "serve", "-c", "/app/config.yaml"]
