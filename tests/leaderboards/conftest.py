"""The HTTP API fixtures, shared with tests/api."""

from __future__ import annotations

from tests.api.conftest import api, fixed_clock

__all__ = ["api", "fixed_clock"]
