import pytest

from api.config import ConfigError, load_catalog
from api.settings import Settings, SettingsError


def write(tmp_path, text):
    path = tmp_path / "mesh.toml"
    path.write_text(text)
    return path


GOOD = """
[providers.acme]
kind = "openai-compatible"
base_url = "http://127.0.0.1:9000/v1"
api_key_env = "ACME_KEY"

[[models]]
id = "acme/gpt"
provider = "acme"
upstream = "gpt"
prompt_usd_per_1k = "0.5"
completion_usd_per_1k = "1.5"
"""


def test_no_file_means_only_the_free_echo_model():
    catalog = load_catalog(None)
    assert list(catalog.models) == ["mesh/echo"] and catalog.get("mesh/echo").price.is_free


def test_a_priced_model_is_loaded_and_the_secret_comes_from_the_environment(tmp_path):
    catalog = load_catalog(write(tmp_path, GOOD), env={"ACME_KEY": "sk-secret"})
    model = catalog.get("acme/gpt")
    assert model.price.cost(1000, 1000) == 2 * 10**12
    assert catalog.providers["acme"].api_key == "sk-secret"
    assert "sk-secret" not in repr(catalog.providers["acme"])


@pytest.mark.parametrize("text, message", [
    (GOOD.replace('prompt_usd_per_1k = "0.5"\n', ""), "has no price"),
    (GOOD.replace('"0.5"', '"half"'), "prompt_usd_per_1k"),
    (GOOD.replace('kind = "openai-compatible"', 'kind = "carrier-pigeon"'), "allowed: openai"),
    (GOOD.replace('provider = "acme"', 'provider = "other"'), "not declared"),
    (GOOD + "\n[oops]\n", "oops"),
    ("this is = = not toml", "mesh.toml"),
])
def test_bad_config_gives_one_clear_line(tmp_path, text, message):
    with pytest.raises(ConfigError) as info:
        load_catalog(write(tmp_path, text), env={"ACME_KEY": "k"})
    assert message in str(info.value) and "\n" not in str(info.value)


def test_a_missing_secret_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"\$ACME_KEY"):
        load_catalog(write(tmp_path, GOOD), env={})


def test_settings_come_from_mesh_variables(tmp_path):
    s = Settings.from_env({"MESH_PORT": "9999", "MESH_DATA_DIR": str(tmp_path)})
    assert s.port == 9999 and s.host == "127.0.0.1"
    token = s.resolved_operator_token()
    assert token == s.resolved_operator_token()  # generated once, then kept
    with pytest.raises(SettingsError):
        Settings.from_env({"MESH_PORT": "eighty"})
