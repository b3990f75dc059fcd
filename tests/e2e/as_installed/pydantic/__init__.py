"""Not installed where Mesh runs (see tests/e2e/as_installed/README.md): an import fails as it would there."""

raise ImportError("pydantic is not installed with Mesh")
