# syntax=docker/dockerfile:1
# hubspot-proxy: the rate-limiting gateway in front of the HubSpot API.
#
#   docker build -t hubspot-proxy .
#   docker run -p 8080:8080 -e REDIS_URL=redis://redis:6379/0 hubspot-proxy
#
# Without REDIS_URL the gateway starts its embedded Valkey (fine for a trial, not for replicas).
# Rules: /etc/hubspot-proxy/rules.yaml (a copy of rules/default.yaml); mount your own over it.

ARG PYTHON_IMAGE=python:3.11-slim

# --- builder: build the wheel, install it with its dependencies into a self-contained venv ---
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY proxy ./proxy
COPY hubspot_sim ./hubspot_sim
RUN pip wheel --no-deps --wheel-dir /wheels . \
    && python -m venv /opt/venv \
    && /opt/venv/bin/pip install /wheels/*.whl

# --- runtime: the venv, the default rules, an unprivileged user; no compilers, no pip cache ---
FROM ${PYTHON_IMAGE} AS runtime
# Numeric UID so Kubernetes' runAsNonRoot can verify it without resolving names.
RUN groupadd --system --gid 10001 hubspot \
    && useradd --system --uid 10001 --gid hubspot --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin hubspot
COPY --from=builder /opt/venv /opt/venv
COPY rules/default.yaml /etc/hubspot-proxy/rules.yaml
# The embedded Valkey's data (AOF) and its generated credential key, when REDIS_URL is unset.
RUN install -d -o 10001 -g 10001 -m 0700 /var/lib/hubspot-proxy
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HUBSPOT_PROXY_HOST=0.0.0.0 \
    HUBSPOT_PROXY_PORT=8080 \
    HUBSPOT_PROXY_RULES=/etc/hubspot-proxy/rules.yaml \
    HUBSPOT_PROXY_DATA_DIR=/var/lib/hubspot-proxy
USER 10001:10001
VOLUME /var/lib/hubspot-proxy
EXPOSE 8080
# Liveness only (process up): /readyz also needs Redis, which a container healthcheck should not
# restart the gateway over. slim has no curl, so ask Python (an exception exits 1 = unhealthy).
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; u.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('HUBSPOT_PROXY_PORT', '8080'), timeout=2)"]
# Exec form: the gateway is PID 1 and gets SIGTERM itself (it drains for up to 20 s).
ENTRYPOINT ["hubspot-proxy"]
CMD ["run"]
