from __future__ import annotations

import pytest

from kit.component import sections_of
from kit.settings import Settings, SettingsError
from peak.app import components
from sso.settings import SsoSettings
from tests.support import run_peak


def test_defaults_and_overrides() -> None:
    s = Settings.from_env({"PEAK_PORT": "9000", "PEAK_LOG_JSON": "yes", "PEAK_HOST": "0.0.0.0"})
    assert (s.port, s.log_json, s.host) == (9000, True, "0.0.0.0")
    assert s.of(SsoSettings).idle_timeout_s == 900
    assert s.public_base_url() == "http://0.0.0.0:9000"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"PEAK_PORT": "eighty"}, "PEAK_PORT must be a whole number, got 'eighty'"),
        ({"PEAK_PORT": "70000"}, "PEAK_PORT must be at most 65535"),
        ({"PEAK_WORKERS": "0"}, "PEAK_WORKERS must be at least 1"),
        ({"PEAK_LOG_JSON": "maybe"}, "PEAK_LOG_JSON must be 1/0"),
        ({"PEAK_SSO_ALGORITHM": "HS256"}, "PEAK_SSO_ALGORITHM must be one of RS256, ES256, EdDSA"),
        ({"PEAK_REDIS_URL": "localhost:6379"}, "PEAK_REDIS_URL must be a URL"),
        (
            {"PEAK_SSO_IDLE_TIMEOUT_S": "100", "PEAK_SSO_ABSOLUTE_TIMEOUT_S": "50"},
            "PEAK_SSO_ABSOLUTE_TIMEOUT_S must be at least PEAK_SSO_IDLE_TIMEOUT_S",
        ),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError) as info:
        Settings.from_env(env, sections=sections_of(components()))
    assert message in str(info.value)


def test_missing_required_setting_names_it() -> None:
    with pytest.raises(SettingsError, match="PEAK_DATABASE_URL is not set"):
        Settings.from_env({}).require("database_url")


@pytest.mark.parametrize("command", [["up"], ["migrate"], ["worker"]])
def test_cli_reports_a_bad_setting_in_one_line(command: list[str], tmp_path: object) -> None:
    result = run_peak(*command, env={"PEAK_PORT": "eighty", "PEAK_DATA_DIR": str(tmp_path)})
    assert result.returncode == 2
    assert result.stderr.strip() == "peak: PEAK_PORT must be a whole number, got 'eighty'"
    assert "Traceback" not in result.stdout + result.stderr


def test_cli_without_servers_says_what_to_do(tmp_path: object) -> None:
    env = {"PEAK_REDIS_URL": "", "PEAK_DATABASE_URL": "", "PEAK_DATA_DIR": str(tmp_path)}
    result = run_peak("migrate", env=env)
    assert result.returncode == 1
    assert "start the stack with `peak up`" in result.stderr
    assert "Traceback" not in result.stderr
