"""A fake Discord server for integration tests of the bot (see server.py and limits.py)."""

from tests.fake_discord.limits import Limit, RateLimits
from tests.fake_discord.server import FakeDiscord, FakeUser, RecordedCall

__all__ = ["FakeDiscord", "FakeUser", "Limit", "RateLimits", "RecordedCall"]
