import pytest

from shared.config import ConfigError, load_config


def test_defaults_load_with_their_types():
    cfg = load_config({})
    assert cfg.get("bus.transport") == "ipc"
    assert cfg.get("bus.max_message_bytes") == 1 << 20
    assert cfg.run_dir.name == "run"


def test_environment_overrides_are_typed():
    cfg = load_config({"BDT_CACHE__MAX_ITEMS": "5_000", "BDT_LOG__LEVEL": "DEBUG",
                       "BDT_VAR": "/tmp/x"})
    assert cfg.get("cache.max_items") == 5000
    assert cfg.get("log.level") == "DEBUG"
    assert str(cfg.var_dir) == "/tmp/x"
    assert "BDT_CACHE__MAX_ITEMS" in cfg.sources


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"BDT_CACHE__MAX_ITEMS": "lots"}, "BDT_CACHE__MAX_ITEMS='lots': expected an integer"),
        ({"BDT_CACHE__NOPE": "1"}, "no config key cache.nope"),
        ({"BDT_BUS__TRANSPORT": "udp"},
         "bus.transport (from environment): expected one of ipc, tcp"),
        ({"BDT_BUS__REQUEST_TIMEOUT_MS": "1"}, "bus.request_timeout_ms (from environment): "
                                               "expected at least 10"),
    ],
)
def test_bad_environment_values_name_the_key(env, needle):
    with pytest.raises(ConfigError) as err:
        load_config(env)
    assert needle in str(err.value)


def test_config_file_errors_name_file_and_key(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[cache\nmax_items = 3")
    with pytest.raises(ConfigError, match="bad.toml: not valid TOML"):
        load_config({"BDT_CONFIG": str(bad)})
    wrong = tmp_path / "wrong.toml"
    wrong.write_text('[cache]\nmax_items = "many"\n')
    with pytest.raises(ConfigError, match=r"cache.max_items \(from .*wrong.toml\): expected an "
                                          r"integer, got 'many'"):
        load_config({"BDT_CONFIG": str(wrong)})
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("[cahce]\nmax_items = 3\n")
    with pytest.raises(ConfigError, match="cahce .*unknown section"):
        load_config({"BDT_CONFIG": str(unknown)})
    with pytest.raises(ConfigError, match="does not exist"):
        load_config({"BDT_CONFIG": str(tmp_path / "missing.toml")})


def test_file_then_environment_precedence(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[cache]\nmax_items = 10\nmax_key_bytes = 64\n")
    cfg = load_config({"BDT_CONFIG": str(path), "BDT_CACHE__MAX_ITEMS": "20"})
    assert cfg.get("cache.max_items") == 20
    assert cfg.get("cache.max_key_bytes") == 64
