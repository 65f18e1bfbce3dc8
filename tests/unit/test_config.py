import pytest

from app.config import Settings, SettingsError, load_settings

KEY = {"SECRET_KEY": "k" * 40}


def test_defaults_are_the_embedded_ones(tmp_path):
    settings = load_settings({"SECRET_KEY_FILE": str(tmp_path / "key")}, env_file=None)
    assert settings.database_url == "sqlite+aiosqlite:///./contacts.db"
    assert settings.redis_url is None
    assert settings.smtp_host is None
    assert settings.cloudinary_url is None
    assert settings.access_token_minutes == 15
    assert settings.refresh_token_days == 7
    assert settings.rate_limit_enabled is True
    assert settings.auto_migrate is True
    assert settings.cors_origins == ()


def test_values_are_parsed_from_strings():
    settings = load_settings(
        {
            **KEY,
            "ACCESS_TOKEN_MINUTES": "30",
            "RATE_LIMIT_ENABLED": "false",
            "CORS_ORIGINS": "https://a.example, https://b.example",
            "REDIS_URL": "redis://localhost:6379/0",
            "SMTP_TLS": "ssl",
            "HEALTH_TIMEOUT": "0.5",
        },
        env_file=None,
    )
    assert settings.access_token_minutes == 30
    assert settings.rate_limit_enabled is False
    assert settings.cors_origins == ("https://a.example", "https://b.example")
    assert settings.redis_url == "redis://localhost:6379/0"
    assert settings.smtp_tls == "ssl"
    assert settings.health_timeout == 0.5


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"ACCESS_TOKEN_MINUTES": "soon"}, "ACCESS_TOKEN_MINUTES"),
        ({"ACCESS_TOKEN_MINUTES": "0"}, "ACCESS_TOKEN_MINUTES"),
        ({"RATE_LIMIT_ENABLED": "maybe"}, "RATE_LIMIT_ENABLED"),
        ({"SMTP_TLS": "tls13"}, "SMTP_TLS"),
        ({"DATABASE_URL": "mysql://x"}, "DATABASE_URL"),
        ({"REDIS_URL": "http://x"}, "REDIS_URL"),
        ({"TIMEZONE": "Mars/Olympus"}, "TIMEZONE"),
        ({"RESET_TOKEN_MINUTES": "120"}, "RESET_TOKEN_MINUTES"),
        ({"BCRYPT_ROUNDS": "3"}, "BCRYPT_ROUNDS"),
        ({"PUBLIC_BASE_URL": "ftp://x"}, "PUBLIC_BASE_URL"),
        ({"CLOUDINARY_URL": "https://x"}, "CLOUDINARY_URL"),
        ({"DEFAULT_PHONE_REGION": "XX"}, "DEFAULT_PHONE_REGION"),
        ({"SECRET_KEY": "short"}, "SECRET_KEY"),
    ],
)
def test_bad_values_name_the_variable(env, named):
    with pytest.raises(SettingsError, match=f"^{named}:"):
        load_settings({**KEY, **env}, env_file=None)


def test_production_requires_a_secret_key(tmp_path):
    with pytest.raises(SettingsError, match=r"^SECRET_KEY:"):
        load_settings(
            {"APP_ENV": "production", "REDIS_URL": "redis://r", "SECRET_KEY_FILE": str(tmp_path / "k")},
            env_file=None,
        )


@pytest.mark.parametrize(
    ("env", "reason"),
    [({"APP_ENV": "production"}, "APP_ENV=production"), ({"WORKERS": "2"}, "WORKERS > 1")],
)
def test_a_store_per_process_is_refused_where_processes_must_agree(env, reason):
    with pytest.raises(SettingsError, match=rf"^REDIS_URL: required when {reason}"):
        load_settings({**KEY, **env}, env_file=None)
    assert load_settings({**KEY, **env, "REDIS_URL": "redis://r:6379/0"}, env_file=None).redis_url


def test_development_key_is_generated_once_and_kept(tmp_path):
    env = {"SECRET_KEY_FILE": str(tmp_path / "key")}
    first = load_settings(env, env_file=None).secret_key
    assert len(first) >= 32
    assert load_settings(env, env_file=None).secret_key == first
    assert (tmp_path / "key").stat().st_mode & 0o077 == 0


def test_env_file_fills_gaps_and_environment_wins(tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text("ACCESS_TOKEN_MINUTES=5\nREFRESH_TOKEN_DAYS=3\n# comment\n")
    settings = load_settings({**KEY, "ACCESS_TOKEN_MINUTES": "9"}, env_file=env_file)
    assert settings.access_token_minutes == 9
    assert settings.refresh_token_days == 3


def test_empty_optional_value_means_unset():
    assert load_settings({**KEY, "REDIS_URL": ""}, env_file=None).redis_url is None


def test_every_setting_is_in_env_sample():
    from pathlib import Path

    import msgspec

    sample = Path(__file__).parents[2] / ".env.sample"
    names = {
        line.split("=")[0].lstrip("# ").strip() for line in sample.read_text().splitlines() if "=" in line
    }
    missing = {f.name.upper() for f in msgspec.structs.fields(Settings)} - names
    assert not missing, f".env.sample lacks {sorted(missing)}"
