import pytest

from workbench.settings import Settings


def test_settings_come_from_workbench_environment_variables(monkeypatch, tmp_path):
    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path / "wb"))
    monkeypatch.setenv("WORKBENCH_PORT", "9300")
    monkeypatch.setenv("WORKBENCH_DEFAULT_MODEL", "my-model")
    monkeypatch.setenv("WORKBENCH_MODEL_ALIASES", '{"mlx-community/Qwen3-1.7B-8bit": "tiny"}')
    monkeypatch.setenv("WORKBENCH_API_TOKEN", "s3cret")

    settings = Settings()

    assert settings.home_dir == (tmp_path / "wb").resolve() and settings.home_dir.is_dir()
    assert settings.port == 9300
    assert settings.default_model == "my-model"
    assert settings.model_aliases == {"mlx-community/Qwen3-1.7B-8bit": "tiny"}
    assert settings.requires_token()
    assert "s3cret" not in repr(settings)


def test_defaults_need_nothing(monkeypatch):
    for name in ("WORKBENCH_HOME", "WORKBENCH_API_TOKEN", "WORKBENCH_HOST", "WORKBENCH_PORT"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings()
    assert (settings.host, settings.port, settings.default_model) == ("127.0.0.1", 8200, "tiny")
    assert str(settings.home) == "~/.workbench"
    assert not settings.requires_token()
    settings.check_bind()  # loopback without a token is fine


def test_binding_beyond_loopback_needs_a_token():
    with pytest.raises(ValueError, match="WORKBENCH_API_TOKEN"):
        Settings(host="0.0.0.0").check_bind()
    Settings(host="0.0.0.0", api_token="t0ken").check_bind()


def test_bad_setting_names_the_variable(monkeypatch):
    monkeypatch.setenv("WORKBENCH_PORT", "not-a-port")
    with pytest.raises(ValueError, match="port"):
        Settings()
