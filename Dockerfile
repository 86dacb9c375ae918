# syntax=docker/dockerfile:1
# Build stage: a wheel of the project and of every dependency.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY notifier ./notifier
COPY templates ./templates
RUN pip wheel --no-cache-dir --wheel-dir /wheels '.[postgres]'

# Run stage: the README's install with the PostgreSQL extra (pip install '.[postgres]'), as a non-root user, with
# /data as the volume.
FROM python:3.11-slim
RUN useradd --system --create-home --uid 10001 notifier \
    && mkdir -p /data /config && chown notifier /data
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links=/wheels 'arxiv-notifier[postgres]' && rm -rf /wheels
COPY subscribers.yaml /config/subscribers.yaml
ENV NOTIFIER_SUBSCRIBERS=/config/subscribers.yaml \
    NOTIFIER_DATA_DIR=/data \
    PYTHONUNBUFFERED=1
USER notifier
VOLUME ["/data"]
# With NOTIFIER_HTTP_ADDR set (e.g. 0.0.0.0:8080) the daemon serves /healthz there; without it there is nothing to ask.
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request as r; a = os.environ.get('NOTIFIER_HTTP_ADDR'); h, _, p = (a or ':').rpartition(':'); h = {'0.0.0.0': '127.0.0.1', '[::]': '[::1]', '': '127.0.0.1'}.get(h, h); sys.exit(0 if not a else r.urlopen(f'http://{h}:{p}/healthz', timeout=4).status != 200)"]
ENTRYPOINT ["notifier"]
CMD ["run"]
