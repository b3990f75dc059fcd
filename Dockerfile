# Mesh: the gateway (`mesh up --no-projections`) and the projection worker (`mesh projections`) in one image.
# A thin layer over the built wheel: the image holds what `pip install mesh_gateway-*.whl` installs, nothing of the
# source tree, so it is what tests/e2e/test_wheel.py tests outside the checkout.
# Exact tag; for reproducible builds pin its digest too (python:3.12.12-slim-bookworm@sha256:...).
FROM python:3.12.12-slim-bookworm AS wheel
WORKDIR /src
COPY pyproject.toml README.md ./
COPY domain ./domain
COPY commands ./commands
COPY projections ./projections
COPY gateway ./gateway
COPY api ./api
RUN pip wheel --no-cache-dir --no-deps -w /dist .

FROM python:3.12.12-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# An unprivileged user; its home holds the data dir (the usage spool, a generated operator token).
RUN useradd --system --uid 10001 --user-group --create-home --home-dir /var/lib/mesh mesh

# Dependencies are installed here, at build time: a container starts without the network. The `otel` extra lets
# the image export traces when OTEL_EXPORTER_OTLP_ENDPOINT is set (docs/operations.md, "Tracing").
COPY --from=wheel /dist /tmp/dist
RUN pip install --no-compile "$(echo /tmp/dist/mesh_gateway-*.whl)[otel]" && rm -rf /tmp/dist

USER mesh
ENV MESH_DATA_DIR=/var/lib/mesh \
    MESH_HOST=0.0.0.0 \
    MESH_PORT=8080
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/health', timeout=2)"]
CMD ["mesh", "up", "--no-projections"]
