"""What the integration tests share on the session's real servers: a NATS connection and an application on a
fresh stream."""

from __future__ import annotations

import nats
import pytest

from commands.app import MeshApplication


@pytest.fixture
async def nc(nats_url):
    client = await nats.connect(nats_url)
    yield client
    await client.close()


@pytest.fixture
def app(nats_url, stream_name):
    application = MeshApplication(nats_url, stream_name)
    yield application
    application.close()
