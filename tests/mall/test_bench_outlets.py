"""`kinloop bench outlets`: a short run on SQLite (and PostgreSQL when set) audits to zero."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from kinloop.cli.app import app
from tests.conftest import PG_URL

runner = CliRunner()


@pytest.mark.parametrize(
    "db",
    [
        None,
        pytest.param(
            PG_URL,
            marks=[pytest.mark.postgres, pytest.mark.skipif(not PG_URL, reason="KINLOOP_TEST_POSTGRES_URL not set")],
        ),
    ],
)
def test_bench_outlets_neither_oversells_nor_double_spends(db: str | None) -> None:
    args = ["bench", "outlets", "--processes", "2", "--members", "20", "--duration", "2", "--json"]
    result = runner.invoke(app, [*args, *(["--db", db] if db else [])])
    assert result.exit_code == 0, result.output
    figures = json.loads(result.output)
    assert (figures["oversold"], figures["double_spent"]) == (0, 0)
    assert figures["orders_placed"] > 0
    assert figures["redemptions_per_s"] > 0
    assert figures["holds_captured"] == figures["capture_repeats"] > 0
    assert figures["draw_entries"] > 0
    assert figures["scarce_prizes_given"] <= 2 * 20  # two prizes of 20 units (the scarce stock)
    assert figures["envelope_claims"] == 2 * figures["envelopes_sent"] > 0
    assert figures["claim_repeats"] == figures["envelopes_sent"]
