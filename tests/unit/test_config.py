import pytest

from api.config import ConfigError, load_catalog
from api.runtime_options import accounts
from api.settings import Settings, SettingsError
from domain.credentials import ScryptParams


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


@pytest.mark.parametrize(
    "text, message",
    [
        (GOOD.replace('prompt_usd_per_1k = "0.5"\n', ""), "has no price"),
        (GOOD.replace('"0.5"', '"half"'), "prompt_usd_per_1k"),
        (GOOD.replace('kind = "openai-compatible"', 'kind = "carrier-pigeon"'), "allowed: openai"),
        (GOOD.replace('provider = "acme"', 'provider = "other"'), "not declared"),
        (GOOD + "\n[oops]\n", "oops"),
        ("this is = = not toml", "mesh.toml"),
    ],
)
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


def test_the_read_models_run_at_idle_priority_unless_the_operator_says_normal():
    assert Settings.from_env({}).background_priority == "idle"
    assert Settings.from_env({"MESH_BACKGROUND_PRIORITY": "normal"}).background_priority == "normal"
    with pytest.raises(SettingsError, match="background_priority") as refused:
        Settings.from_env({"MESH_BACKGROUND_PRIORITY": "low"})
    assert "idle" in str(refused.value) and "normal" in str(refused.value)  # what is allowed


def test_password_hashes_cost_owasps_scrypt_unless_the_operator_chooses_within_bounds():
    """Production's default is pinned here: test servers lower MESH_PASSWORD_KDF_LOG_N, a server nobody
    configured never does."""
    assert accounts(Settings.from_env({}))["password_kdf"] == ScryptParams(17, 8, 1)
    assert accounts(Settings.from_env({"MESH_PASSWORD_KDF_LOG_N": "12"}))["password_kdf"] == ScryptParams(12, 8, 1)
    for outside in ("9", "21", "seventeen"):
        with pytest.raises(SettingsError, match="password_kdf_log_n"):
            Settings.from_env({"MESH_PASSWORD_KDF_LOG_N": outside})


def test_output_limits_default_by_provider_kind_and_can_be_set(tmp_path):
    text = (
        GOOD.replace('kind = "openai-compatible"', 'kind = "openai"')
        + """
[[models]]
id = "acme/small"
provider = "acme"
upstream = "gpt-4o-mini"
prompt_usd_per_1k = "0.15"
completion_usd_per_1k = "0.6"
max_output_tokens = 1000
context_tokens = 8000
"""
    )
    catalog = load_catalog(write(tmp_path, text), env={"ACME_KEY": "k"})
    default, small = catalog.get("acme/gpt"), catalog.get("acme/small")
    # an unknown OpenAI model may write as much as any (no limit goes upstream when the client sets none)
    assert (default.max_output_tokens, default.context_tokens, default.image_tokens) == (128000, 400000, 3779)
    assert (small.max_output_tokens, small.context_tokens) == (1000, 8000)
    assert small.image_tokens == 8000  # gpt-4o-mini counts 48,169 for one image; the context bounds it
    compatible = load_catalog(write(tmp_path, GOOD), env={"ACME_KEY": "k"}).get("acme/gpt")
    assert (compatible.max_output_tokens, compatible.context_tokens) == (32768, 32768)  # may write until it is full
    assert compatible.image_tokens == 32768  # unknown servers: nothing smaller than the context is safe


@pytest.mark.parametrize(
    ("kind", "upstream", "expected"),
    [
        ("openai", "gpt-5-mini", (128_000, 400_000)),
        ("openai", "gpt-4o-mini-2024-07-18", (16_384, 128_000)),
        ("openai", "ft:gpt-4o-mini-2024-07-18:acme::abc123", (16_384, 128_000)),
        ("openai", "gpt-4.1-nano", (32_768, 1_047_576)),
        ("openai", "o1-mini", (65_536, 128_000)),  # the longest family wins over "o1"
        ("openai", "o3-pro", (100_000, 200_000)),
        ("anthropic", "claude-sonnet-4-5-20250929", (64_000, 200_000)),
        ("anthropic", "claude-opus-4-1-20250805", (32_000, 200_000)),
        ("anthropic", "claude-3-5-haiku-latest", (8_192, 200_000)),
        ("anthropic", "claude-3-haiku-20240307", (4_096, 200_000)),
        ("anthropic", "claude-next", (8_192, 200_000)),  # unknown: a limit every current Claude accepts
        ("gemini", "gemini-2.5-flash", (65_536, 1_048_576)),
        ("gemini", "models/gemini-2.0-flash", (8_192, 1_048_576)),
        ("gemini", "gemini-1.5-pro-002", (8_192, 2_097_152)),
    ],
)
def test_known_model_families_get_their_published_limits(tmp_path, kind, upstream, expected):
    text = GOOD.replace('kind = "openai-compatible"', f'kind = "{kind}"').replace(
        'upstream = "gpt"', f'upstream = "{upstream}"'
    )
    model = load_catalog(write(tmp_path, text), env={"ACME_KEY": "k"}).get("acme/gpt")
    assert (model.max_output_tokens, model.context_tokens) == expected


@pytest.mark.parametrize(
    "limits, message",
    [
        ("max_output_tokens = 0", "at least 1"),
        ("max_output_tokens = 9000\ncontext_tokens = 8000", r"larger than its context_tokens \(8000\)"),
    ],
)
def test_bad_output_limits_are_named(tmp_path, limits, message):
    with pytest.raises(ConfigError, match=message):
        load_catalog(write(tmp_path, GOOD + limits + "\n"), env={"ACME_KEY": "k"})


def test_an_openai_compatible_provider_may_allow_fields_of_its_own_and_only_unpriced_ones(tmp_path):
    with_extra = GOOD.replace('api_key_env = "ACME_KEY"', 'api_key_env = "ACME_KEY"\nextra_fields = ["top_k", "min_p"]')
    catalog = load_catalog(write(tmp_path, with_extra), env={"ACME_KEY": "k"})
    assert catalog.providers["acme"].extra_fields == {"top_k", "min_p"}
    assert load_catalog(write(tmp_path, GOOD), env={"ACME_KEY": "k"}).providers["acme"].extra_fields == frozenset()
    for fields, message in [
        ('["audio"]', "'audio' is priced"),
        ('["temperature"]', "'temperature' is already handled by Mesh"),
        ('["template"]', "already handled by Mesh"),
        ('["top k"]', "is not a field name"),
        ("[" + ", ".join(f'"f{i}"' for i in range(33)) + "]", "at most 32 fields"),
    ]:
        text = GOOD.replace('api_key_env = "ACME_KEY"', f'api_key_env = "ACME_KEY"\nextra_fields = {fields}')
        with pytest.raises(ConfigError, match=message):
            load_catalog(write(tmp_path, text), env={"ACME_KEY": "k"})
    openai_kind = with_extra.replace('kind = "openai-compatible"', 'kind = "openai"')
    with pytest.raises(ConfigError, match="extra_fields is for openai-compatible providers"):
        load_catalog(write(tmp_path, openai_kind), env={"ACME_KEY": "k"})


def test_aliases_are_bare_names_unique_across_the_catalog_and_resolve_to_their_model(tmp_path):
    aliased = GOOD.replace(
        'completion_usd_per_1k = "1.5"', 'completion_usd_per_1k = "1.5"\naliases = ["gpt", "gpt-4o-mini"]'
    )
    catalog = load_catalog(write(tmp_path, aliased), env={"ACME_KEY": "k"})
    assert catalog.get("gpt").id == "acme/gpt" and catalog.get("gpt-4o-mini") is catalog.get("acme/gpt")
    assert catalog.get("gpt-4o") is None
    catalog.apply("acme/gpt", enabled=False)
    assert catalog.get("gpt") is None  # a disabled model is off by every name
    for aliases, message in [
        ('["acme/gpt2"]', "no slash"),
        ('["mesh/echo"]', "no slash"),
        ('["acme/gpt"]', "no slash"),
        ('["dup", "dup"]', "already a model id or an alias"),
        ("[" + ", ".join(f'"a{i}"' for i in range(17)) + "]", "at most 16"),
    ]:
        text = GOOD.replace('completion_usd_per_1k = "1.5"', f'completion_usd_per_1k = "1.5"\naliases = {aliases}')
        with pytest.raises(ConfigError, match=message):
            load_catalog(write(tmp_path, text), env={"ACME_KEY": "k"})


def test_ignore_fields_are_read_per_model_and_bounded(tmp_path):
    text = GOOD + 'ignore_fields = ["cache_control", "context_management"]\n'
    model = load_catalog(write(tmp_path, text), env={"ACME_KEY": "k"}).get("acme/gpt")
    assert model.ignore_fields == frozenset({"cache_control", "context_management"})
    for bad, message in (
        ('ignore_fields = ["max_tokens"]', "cannot be dropped"),
        ('ignore_fields = ["no spaces"]', "not a field name"),
        (f"ignore_fields = {[f'f{n}' for n in range(33)]}".replace("'", '"'), "at most 32"),
    ):
        with pytest.raises(ConfigError, match=message):
            load_catalog(write(tmp_path, GOOD + bad + "\n"), env={"ACME_KEY": "k"})


def test_fallbacks_name_declared_models_and_are_bounded(tmp_path):
    other = (
        '\n[[models]]\nid = "acme/{}"\nprovider = "acme"\nupstream = "x"\n'
        'prompt_usd_per_1k = "1"\ncompletion_usd_per_1k = "1"\n'
    )
    others = "".join(other.format(f"m{n}") for n in range(6))
    text = GOOD + 'fallbacks = ["acme/m0", "acme/m1"]\n' + others
    catalog = load_catalog(write(tmp_path, text), env={"ACME_KEY": "k"})
    assert catalog.get("acme/gpt").fallbacks == ("acme/m0", "acme/m1")
    assert catalog.get("acme/m0").fallbacks == ()
    for bad, message in (
        ('fallbacks = ["acme/nope"]', "fallback 'acme/nope' is not a model id declared"),
        ('fallbacks = ["acme/gpt"]', "names itself as a fallback"),
        ('fallbacks = ["acme/m0", "acme/m0"]', "names a fallback twice"),
        (f"fallbacks = {[f'acme/m{n}' for n in range(5)]}".replace("'", '"'), "has 5 fallbacks; at most 4"),
    ):
        with pytest.raises(ConfigError, match=message):
            load_catalog(write(tmp_path, GOOD + bad + "\n" + others), env={"ACME_KEY": "k"})
