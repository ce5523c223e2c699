# One image for the project's own services: the worker, Flower, the simulator and the
# producer CLI (docker-compose.yml picks the command). Small and non-root.
#   docker build -t kling-selection-worker .

FROM python:3.11.10-slim-bookworm AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
RUN python -m venv /opt/venv
COPY pyproject.toml README.md ./
COPY contract ./contract
COPY producers ./producers
COPY worker ./worker
COPY simulator ./simulator
COPY devstack ./devstack
# The simulator extra (aiohttp) so the same image serves kling-api-sim; PyAV (the pre-flight
# probe) is a main dependency.
RUN /opt/venv/bin/pip install ".[sim]"

FROM python:3.11.10-slim-bookworm
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin kling \
    && mkdir -p /data && chown kling:kling /data
COPY --from=build /opt/venv /opt/venv
USER kling
WORKDIR /home/kling
# Flower's config is read from here (docker-compose.yml: --conf=/home/kling/config/flowerconfig.py).
COPY --chown=kling:kling config ./config
EXPOSE 9808 5555 8000
CMD ["celery", "-A", "worker", "worker", "-l", "INFO"]
