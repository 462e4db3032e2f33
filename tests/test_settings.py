"""Settings: LORAPOD_HOME or XDG, env over config.toml over defaults, secrets never shown, 0600 files."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from store.errors import SettingsError
from store.settings import load_settings, resolve_paths, write_setting
from tests.conftest import run_cli, run_lorapod

SECRET = "sk-very-secret-value-123"


def test_lorapod_home_holds_the_whole_installation(lorapod_home: Path) -> None:
    paths = resolve_paths()
    assert paths.config_file == lorapod_home / "config.toml"
    assert paths.ledger == lorapod_home / "ledger.sqlite"
    assert paths.jobs_dir == lorapod_home / "jobs"
    assert paths.cache_dir == lorapod_home / "cache"


def test_without_lorapod_home_the_xdg_locations_are_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LORAPOD_HOME")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    paths = resolve_paths()
    assert paths.config_file == tmp_path / "cfg" / "lorapod" / "config.toml"
    assert paths.ledger == tmp_path / "data" / "lorapod" / "ledger.sqlite"


def test_environment_beats_config_file_beats_default(lorapod_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lorapod_home.mkdir(parents=True)
    (lorapod_home / "config.toml").write_text("monthly_budget_usd = 300\nhard_cap_usd = 120\n")
    monkeypatch.setenv("LORAPOD_HARD_CAP_USD", "90")
    settings = load_settings()
    assert settings.monthly_budget_usd == 300
    assert settings.hard_cap_usd == 90
    assert settings.per_job_ceiling_usd == 150

    shown = json.loads(run_cli("config", "show", "--json").stdout)["settings"]
    assert shown["monthly_budget_usd"]["source"].startswith("config ")
    assert shown["hard_cap_usd"]["source"] == "env LORAPOD_HARD_CAP_USD"
    assert shown["per_job_ceiling_usd"]["source"] == "default"


def test_budget_defaults() -> None:
    s = load_settings()
    assert (s.monthly_budget_usd, s.per_job_ceiling_usd, s.hard_cap_usd, s.max_duration_hours) == (400, 150, 200, 24)
    assert s.alert_thresholds == [0.8, 0.95]


def test_config_show_never_prints_a_secret(lorapod_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNPOD_API_KEY", SECRET)
    monkeypatch.setenv("SUPABASE_DB_URL", f"postgresql://u:{SECRET}@db/x")
    write_setting("hf_token", SECRET + "-hf")
    for args in (("config", "show"), ("config", "show", "--json")):
        result = run_lorapod(*args)
        assert result.returncode == 0, result.stderr
        assert SECRET not in result.stdout + result.stderr
    shown = json.loads(run_lorapod("config", "show", "--json").stdout)["settings"]
    assert shown["runpod_api_key"] == {"value": "<set, redacted>", "source": "env RUNPOD_API_KEY", "secret": True}
    assert shown["hf_token"]["source"].startswith("config ")
    assert shown["training_webhook_secret"]["value"] is None
    assert SECRET not in repr(load_settings())


def test_runpod_key_is_read_from_the_runpod_cli_config(tmp_path: Path) -> None:
    config = tmp_path / "user-home" / ".runpod" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text(f'[default]\napi_key = "{SECRET}"\n')
    settings = load_settings()
    assert settings.runpod_api_key is not None
    assert settings.runpod_api_key.get_secret_value() == SECRET
    shown = json.loads(run_cli("config", "show", "--json").stdout)["settings"]["runpod_api_key"]
    assert shown["source"].startswith("runpod config")


def test_written_config_is_private_and_keeps_comments(lorapod_home: Path) -> None:
    lorapod_home.mkdir(parents=True)
    path = lorapod_home / "config.toml"
    path.write_text("# my budget notes\nmonthly_budget_usd = 250\n")
    result = run_cli("config", "set", "per_job_ceiling_usd", "99.5")
    assert result.exit_code == 0
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = path.read_text()
    assert "# my budget notes" in text and "per_job_ceiling_usd = 99.5" in text
    assert load_settings().per_job_ceiling_usd == 99.5


def test_config_set_refuses_bad_values_and_unknown_names() -> None:
    bad = run_cli("config", "set", "--", "monthly_budget_usd", "-5")
    assert bad.exit_code == 2 and "monthly_budget_usd" in bad.stderr
    not_a_number = run_cli("config", "set", "hard_cap_usd", "lots")
    assert not_a_number.exit_code == 2 and "hard_cap_usd" in not_a_number.stderr
    unknown = run_cli("config", "set", "montly_budget", "5")
    assert unknown.exit_code == 2 and "unknown setting" in unknown.stderr


def test_a_typo_in_config_toml_is_named(lorapod_home: Path) -> None:
    lorapod_home.mkdir(parents=True)
    (lorapod_home / "config.toml").write_text("montly_budget_usd = 5\n")
    with pytest.raises(SettingsError, match="montly_budget_usd"):
        load_settings()
    result = run_lorapod("costs")
    assert result.returncode == 1
    assert "montly_budget_usd" in result.stderr and "Traceback" not in result.stderr


def test_a_broken_config_file_is_a_clear_error(lorapod_home: Path) -> None:
    lorapod_home.mkdir(parents=True)
    (lorapod_home / "config.toml").write_text("monthly_budget_usd = = 5\n")
    result = run_lorapod("config", "show")
    assert result.returncode == 1
    assert "config.toml" in result.stderr and "Traceback" not in result.stderr


def test_alert_thresholds_must_be_shares(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LORAPOD_ALERT_THRESHOLDS", "[80, 95]")
    with pytest.raises(SettingsError, match="alert_thresholds"):
        load_settings()


def test_notice_settings_keep_their_secrets_and_take_address_lists(monkeypatch: pytest.MonkeyPatch) -> None:
    hook = f"https://hooks.example.com/services/T0/B0/{SECRET}"
    monkeypatch.setenv("LORAPOD_NOTIFY_WEBHOOK_URL", hook)
    monkeypatch.setenv("LORAPOD_NOTIFY_SMTP_PASSWORD", SECRET + "-smtp")
    assert run_cli("config", "set", "notify_email_to", "ops@example.com, me@example.com").exit_code == 0
    settings = load_settings()
    assert settings.notify_email_to == ["ops@example.com", "me@example.com"]
    assert settings.notify_webhook_url is not None and settings.notify_webhook_url.get_secret_value() == hook
    result = run_lorapod("config", "show", "--json")
    assert result.returncode == 0 and SECRET not in result.stdout + result.stderr
    shown = json.loads(result.stdout)["settings"]
    assert shown["notify_webhook_url"]["source"] == "env LORAPOD_NOTIFY_WEBHOOK_URL"
    assert shown["notify_smtp_password"]["value"] == "<set, redacted>"
    bad = run_cli("config", "set", "notify_email_to", "not an address")
    assert bad.exit_code == 2 and "not an e-mail address" in bad.stderr

    monkeypatch.setenv("LORAPOD_NOTIFY_WEBHOOK_URL", f"hooks.example.com/{SECRET}")
    with pytest.raises(SettingsError, match="http\\(s\\) URL") as refused:
        load_settings()
    assert SECRET not in str(refused.value)
