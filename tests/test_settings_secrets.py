"""Secrets from files (the recommended way: flags show in the process list), and from the environment."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from reelserve.cli import app
from reelserve.settings import Settings
from reelserve.webhooks.signing import generate_secret


def test_keys_files_skip_blank_lines_and_comments(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text("# the team's keys\nalpha\n\n  beta  \n# gamma\n")
    admins = tmp_path / "admins"
    admins.write_text("root-key\n")
    settings = Settings(api_keys_file=keys, admin_keys_file=admins)
    assert settings.api_keys == ["alpha", "beta"] and settings.admin_keys == ["root-key"]


def test_secret_and_tenants_files(tmp_path: Path) -> None:
    secret = generate_secret()
    (tmp_path / "secret").write_text(secret + "\n")
    (tmp_path / "tenants").write_text('{"alpha": {"tier": "batch", "queue_share": 0.25}}')
    settings = Settings(webhook_secret_file=tmp_path / "secret", tenants_file=tmp_path / "tenants")
    assert settings.webhook_secret == secret
    assert settings.tenants["alpha"].tier == "batch" and settings.tenants["alpha"].queue_share == 0.25


def test_a_bad_secret_file_is_refused_naming_it(tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("not-a-secret")
    with pytest.raises(ValidationError, match="whsec_"):
        Settings(webhook_secret_file=tmp_path / "secret")
    with pytest.raises(ValidationError, match="api_keys_file: cannot read"):
        Settings(api_keys_file=tmp_path / "missing")
    (tmp_path / "keys").write_text("alpha\n")
    with pytest.raises(ValidationError, match="not both"):
        Settings(api_keys=["beta"], api_keys_file=tmp_path / "keys")


def test_files_come_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "keys").write_text("from-a-file\n")
    monkeypatch.setenv("REELSERVE_API_KEYS_FILE", str(tmp_path / "keys"))
    monkeypatch.setenv("REELSERVE_ADMIN_KEYS", "from-env")
    settings = Settings()
    assert settings.api_keys == ["from-a-file"] and settings.admin_keys == ["from-env"]


def test_serve_refuses_an_unreadable_keys_file(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["serve", "--model", "tiny", "--api-keys-file", str(tmp_path / "none"),
                                      "--data-dir", str(tmp_path)])
    assert result.exit_code == 2 and "api_keys_file" in result.output
