"""Fixtures of the deployment tests: the fake Discord, and a blank PostgreSQL database."""

from __future__ import annotations

from tests.bot.conftest import fake_discord  # noqa: F401 (fixture)
from tests.bot.test_migrations import postgres_url  # noqa: F401 (fixture)
