"""A Mesh that takes no cards never imports the Stripe SDK (api/stripe_payments.py holds all of it): one that does,
does. Each in a fresh interpreter, as `mesh up` starts."""

from __future__ import annotations

import subprocess
import sys

BUILD = """
import sys
from api.app import MeshASGI
import api.composition, api.runtime, api.services.billing, api.autorefill
from api.runtime_options import payments
from api.settings import Settings
providers = payments(Settings.from_env())
print(sorted(providers), "stripe" in sys.modules)
"""


def built(env: dict[str, str]) -> str:
    return subprocess.run(
        [sys.executable, "-c", BUILD], env={"PATH": "/usr/bin:/bin", **env}, capture_output=True, text=True, check=True
    ).stdout.strip()


def test_the_stripe_sdk_is_imported_only_where_cards_are_taken(tmp_path):
    home = {"MESH_DATA_DIR": str(tmp_path / "data")}
    assert built(home) == "['bank_transfer'] False"
    assert built({**home, "MESH_STRIPE_SECRET_KEY": "sk_test_x"}) == "['bank_transfer', 'stripe'] True"
