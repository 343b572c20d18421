"""A fake Discord server for integration tests of the bot (see server.py)."""

from tests.fake_discord.server import FakeDiscord, FakeUser, RecordedCall

__all__ = ["FakeDiscord", "FakeUser", "RecordedCall"]
