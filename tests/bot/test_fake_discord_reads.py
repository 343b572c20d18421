"""The fake Discord's read endpoints are as strict as Discord's: a message with its reaction
counts, the users who reacted (paginated), permissions, deleted messages and channels, and
the rate limits; the real discord.py reads them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import aiohttp
import discord
import pytest

from tests.fake_discord import FakeDiscord
from tests.fake_discord.limits import Limit, RateLimits

pytestmark = pytest.mark.timeout(30)

BOT = {"Authorization": "Bot fake-token"}


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(headers=BOT) as session:
        yield session


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    server = FakeDiscord(limits=None)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def post_message(fake: FakeDiscord, client: aiohttp.ClientSession, channel_id: int) -> int:
    async with client.post(
        f"{fake.api_base}/channels/{channel_id}/messages", json={"content": "x"}
    ) as response:
        assert response.status == 200
        return int((await response.json())["id"])


def message_url(fake: FakeDiscord, channel_id: int, message_id: int) -> str:
    return f"{fake.api_base}/channels/{channel_id}/messages/{message_id}"


def users_url(fake: FakeDiscord, channel_id: int, message_id: int, emoji: str) -> str:
    return f"{message_url(fake, channel_id, message_id)}/reactions/{quote(emoji)}"


async def get(client: aiohttp.ClientSession, url: str, **params: Any) -> tuple[int, Any]:
    async with client.get(url, params=params) as response:
        return response.status, await response.json()


async def test_a_message_shows_its_reaction_counts_and_me(
    fake: FakeDiscord, client: aiohttp.ClientSession
) -> None:
    message = await post_message(fake, client, fake.channel_id)
    async with client.put(f"{users_url(fake, fake.channel_id, message, '👍')}/@me") as response:
        assert response.status == 204
    ann, ben = fake.member("ann"), fake.member("ben")
    await fake.react(ann, message, "👍")
    await fake.react(ben, message, "👎")
    await fake.react(ben, message, "⭐")
    await fake.react(ben, message, "⭐", add=False)  # a count of 0 is no reaction at all
    status, body = await get(client, message_url(fake, fake.channel_id, message))
    assert status == 200
    assert body["reactions"] == [
        {
            "emoji": {"id": None, "name": "👍"},
            "count": 2,
            "count_details": {"burst": 0, "normal": 2},
            "me": True,
            "me_burst": False,
            "burst_colors": [],
        },
        {
            "emoji": {"id": None, "name": "👎"},
            "count": 1,
            "count_details": {"burst": 0, "normal": 1},
            "me": False,
            "me_burst": False,
            "burst_colors": [],
        },
    ]
    # The message lives in one channel only.
    status, body = await get(client, message_url(fake, 2999, message))
    assert (status, body["code"]) == (404, 10008)


async def test_reaction_users_are_sorted_and_paginated_with_after_and_limit(
    fake: FakeDiscord, client: aiohttp.ClientSession
) -> None:
    message = await post_message(fake, client, fake.channel_id)
    members = [fake.member(f"user{i}") for i in range(130)]
    robot = fake.member("robot", bot=True)
    for user in [*reversed(members), robot]:
        await fake.react(user, message, "👍")
    url = users_url(fake, fake.channel_id, message, "👍")
    everyone = sorted([*members, robot], key=lambda u: u.id)

    status, page = await get(client, url)
    assert status == 200 and len(page) == 25  # Discord's default limit
    assert [int(u["id"]) for u in page] == [u.id for u in everyone[:25]]
    assert page[0] == everyone[0].payload()
    status, page = await get(client, url, limit=100, after=everyone[24].id)
    assert [int(u["id"]) for u in page] == [u.id for u in everyone[25:125]]
    status, page = await get(client, url, limit=100, after=int(page[-1]["id"]))
    assert [int(u["id"]) for u in page] == [u.id for u in everyone[125:]]
    assert any(u["bot"] for u in page)  # the user objects say who is a bot
    status, page = await get(client, users_url(fake, fake.channel_id, message, "🎸"))
    assert (status, page) == (200, [])


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": 101}, "limit"),
        ({"limit": 0}, "limit"),
        ({"limit": "many"}, "limit"),
        ({"after": "soon"}, "after"),
        ({"type": 2}, "type"),
    ],
)
async def test_bad_paging_parameters_are_an_invalid_form_body(
    fake: FakeDiscord, client: aiohttp.ClientSession, params: dict[str, Any], field: str
) -> None:
    message = await post_message(fake, client, fake.channel_id)
    status, body = await get(client, users_url(fake, fake.channel_id, message, "👍"), **params)
    assert status == 400
    assert body["code"] == 50035 and body["message"] == "Invalid Form Body"
    assert field in body["errors"]


async def test_super_reactions_are_listed_by_type(
    fake: FakeDiscord, client: aiohttp.ClientSession
) -> None:
    message = await post_message(fake, client, fake.channel_id)
    ann, ben = fake.member("ann"), fake.member("ben")
    await fake.react(ann, message, "👍")
    await fake.react(ben, message, "👍", burst=True)
    status, body = await get(client, message_url(fake, fake.channel_id, message))
    assert status == 200
    [reaction] = body["reactions"]
    assert reaction["count"] == 2 and reaction["count_details"] == {"burst": 1, "normal": 1}
    url = users_url(fake, fake.channel_id, message, "👍")
    assert [u["id"] for u in (await get(client, url))[1]] == [str(ann.id)]
    assert [u["id"] for u in (await get(client, url, type=1))[1]] == [str(ben.id)]


@pytest.mark.parametrize("missing", ["view", "history"])
async def test_reading_needs_view_channel_and_read_message_history(
    fake: FakeDiscord, client: aiohttp.ClientSession, missing: str
) -> None:
    message = await post_message(fake, client, fake.channel_id)
    await fake.react(fake.member("ann"), message, "👍")
    (fake.no_view_in if missing == "view" else fake.no_history_in).add(fake.channel_id)
    for url in (
        message_url(fake, fake.channel_id, message),
        users_url(fake, fake.channel_id, message, "👍"),
    ):
        status, body = await get(client, url)
        assert (status, body) == (403, {"message": "Missing Access", "code": 50001})
    bits = fake.app_permissions_in(fake.channel_id)
    assert not bits & (0x400 if missing == "view" else 0x10000)


async def test_deleted_messages_and_channels_are_unknown(
    fake: FakeDiscord, client: aiohttp.ClientSession
) -> None:
    gone = await post_message(fake, client, fake.channel_id)
    kept = await post_message(fake, client, fake.channel_id)
    fake.delete_message(gone)
    for url in (
        message_url(fake, fake.channel_id, gone),
        users_url(fake, fake.channel_id, gone, "👍"),
    ):
        status, body = await get(client, url)
        assert (status, body["code"]) == (404, 10008)
    fake.delete_channel(fake.channel_id)
    status, body = await get(client, message_url(fake, fake.channel_id, kept))
    assert (status, body) == (404, {"message": "Unknown Channel", "code": 10003})


async def test_ephemeral_messages_cannot_be_fetched(
    fake: FakeDiscord, client: aiohttp.ClientSession
) -> None:
    interaction = await fake.invoke(fake.member("ann"), "genre", "new")
    callback = f"{fake.api_base}/interactions/{interaction.id}/{interaction.token}/callback"
    async with client.post(callback, json={"type": 4, "data": {"content": "hi", "flags": 64}}):
        pass
    original = fake.original(interaction)
    assert original is not None
    status, body = await get(client, message_url(fake, fake.channel_id, int(original["id"])))
    assert (status, body["code"]) == (404, 10008)


async def test_reaction_users_have_their_own_rate_limited_bucket(
    client: aiohttp.ClientSession,
) -> None:
    fake = FakeDiscord(limits=RateLimits(reaction_users=Limit(2, 5.0)))
    await fake.start()
    try:
        message = await post_message(fake, client, fake.channel_id)
        url = users_url(fake, fake.channel_id, message, "👍")
        statuses, buckets = [], set()
        for _ in range(3):
            async with client.get(url) as response:
                statuses.append(response.status)
                buckets.add(response.headers.get("X-RateLimit-Bucket"))
                if response.status == 429:
                    body = await response.json()
                    assert response.headers["X-RateLimit-Scope"] == "user"
        assert statuses == [200, 200, 429] and 0 < body["retry_after"] <= 5.0
        # Adding a reaction is counted elsewhere (Discord buckets reactions per method).
        async with client.put(f"{url}/@me") as response:
            assert response.status == 204
            assert response.headers["X-RateLimit-Bucket"] not in buckets
    finally:
        await fake.stop()


async def test_discord_py_reads_counts_and_pages_users(
    fake: FakeDiscord, client: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake.patch(monkeypatch)
    message_id = await post_message(fake, client, fake.channel_id)
    members = [fake.member(f"user{i}") for i in range(150)]
    for user in members:
        await fake.react(user, message_id, "👎")
    bot = discord.Client(intents=discord.Intents.none())
    await bot.login("fake-token")
    try:
        channel = bot.get_partial_messageable(fake.channel_id, guild_id=fake.guild_id)
        message = await channel.fetch_message(message_id)
        [reaction] = message.reactions
        assert (str(reaction.emoji), reaction.count, reaction.me) == ("👎", 150, False)
        users = [u async for u in reaction.users()]
        assert sorted(u.id for u in users) == sorted(u.id for u in members)
        pages = fake.calls_matching("GET", "/reactions/")
        assert [c.query.get("limit") for c in pages] == ["100", "50"]
        assert pages[1].query["after"] == str(sorted(u.id for u in members)[99])
        with pytest.raises(discord.NotFound):
            await channel.fetch_message(message_id + 1)
    finally:
        await bot.close()
