# Mesh: the gateway (`mesh up --no-projections`) and the projection worker (`mesh projections`) in one image.
# Exact tag; for reproducible builds pin its digest too (python:3.12.12-slim-bookworm@sha256:...).
FROM python:3.12.12-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# An unprivileged user; its home holds the data dir (the usage spool, a generated operator token).
RUN useradd --system --uid 10001 --user-group --create-home --home-dir /var/lib/mesh mesh

WORKDIR /opt/mesh
COPY pyproject.toml README.md ./
COPY domain ./domain
COPY commands ./commands
COPY projections ./projections
COPY gateway ./gateway
COPY api ./api
# Dependencies are installed here, at build time: a container starts without the network.
RUN pip install --no-compile . && rm -rf build *.egg-info

USER mesh
ENV MESH_DATA_DIR=/var/lib/mesh \
    MESH_HOST=0.0.0.0 \
    MESH_PORT=8080
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/health', timeout=2)"]
CMD ["mesh", "up", "--no-projections"]
