"""`kinloop users`: operator accounts from the command line."""

from __future__ import annotations

import json

from tests.cli.test_cli import COFFEE, kl


def test_create_list_and_disable_an_operator(db_url: str) -> None:
    assert kl("init", COFFEE, "--db", db_url).exit_code == 0
    created = kl(
        "users", "create", "ana", "--role", "viewer", "--password", "a-long-password", "--db", db_url, "--json"
    )
    assert created.exit_code == 0, created.output
    assert json.loads(created.stdout)["role"] == "viewer"
    listed = json.loads(kl("users", "list", "--db", db_url, "--json").stdout)
    assert [(o["username"], o["role"], o["disabled_at"]) for o in listed] == [("ana", "viewer", None)]
    assert kl("users", "disable", "ana", "--db", db_url).exit_code == 0
    assert json.loads(kl("users", "list", "--db", db_url, "--json").stdout)[0]["disabled_at"] is not None


def test_a_bad_account_says_why_and_creates_nothing(db_url: str) -> None:
    assert kl("init", COFFEE, "--db", db_url).exit_code == 0
    short = kl("users", "create", "ana", "--role", "owner", "--password", "short", "--db", db_url)
    assert short.exit_code == 2
    assert "password must be at least 10 characters" in short.output
    role = kl("users", "create", "ana", "--role", "root", "--password", "a-long-password", "--db", db_url)
    assert role.exit_code == 2
    assert json.loads(kl("users", "list", "--db", db_url, "--json").stdout) == []
    assert kl("users", "disable", "nobody", "--db", db_url).exit_code == 3
