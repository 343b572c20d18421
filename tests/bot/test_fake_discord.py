"""The fake Discord is as strict as Discord: rate-limit headers, 429s, the global limit,
Missing Permissions, the acknowledgement deadline and the token lifetime."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from tests.fake_discord import FakeDiscord
from tests.fake_discord.limits import Limit, RateLimits

pytestmark = pytest.mark.timeout(30)

BOT = {"Authorization": "Bot fake-token"}


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(headers=BOT) as session:
        yield session


async def started(**options: Any) -> FakeDiscord:
    fake = FakeDiscord(**options)
    await fake.start()
    return fake


async def post_message(fake: FakeDiscord, client: aiohttp.ClientSession, channel_id: int) -> int:
    async with client.post(
        f"{fake.api_base}/channels/{channel_id}/messages", json={"content": "x"}
    ) as response:
        assert response.status == 200
        return int((await response.json())["id"])


def reaction_url(fake: FakeDiscord, channel_id: int, message_id: int, emoji: str = "👍") -> str:
    return f"{fake.api_base}/channels/{channel_id}/messages/{message_id}/reactions/{emoji}/@me"


async def test_buckets_answer_with_discord_headers(client: aiohttp.ClientSession) -> None:
    fake = await started()
    try:
        message = await post_message(fake, client, fake.channel_id)
        async with client.put(reaction_url(fake, fake.channel_id, message)) as response:
            assert response.status == 204
            headers = response.headers
        assert headers["X-RateLimit-Limit"] == "1"
        assert headers["X-RateLimit-Remaining"] == "0"
        assert 0 < float(headers["X-RateLimit-Reset-After"]) <= 0.25
        assert float(headers["X-RateLimit-Reset"]) > 1e9  # epoch seconds
        reaction_bucket = headers["X-RateLimit-Bucket"]
        async with client.post(
            f"{fake.api_base}/channels/{fake.channel_id}/messages", json={"content": "y"}
        ) as response:
            assert response.headers["X-RateLimit-Limit"] == "5"
            assert response.headers["X-RateLimit-Remaining"] == "3"  # the second of five
            assert response.headers["X-RateLimit-Bucket"] != reaction_bucket
    finally:
        await fake.stop()


async def test_a_full_bucket_answers_429_as_discord_does(client: aiohttp.ClientSession) -> None:
    fake = await started()
    try:
        message = await post_message(fake, client, fake.channel_id)
        async with client.put(reaction_url(fake, fake.channel_id, message, "👍")) as first:
            assert first.status == 204
        async with client.put(reaction_url(fake, fake.channel_id, message, "👎")) as second:
            assert second.status == 429
            body = await second.json()
            headers = second.headers
        assert body["message"] == "You are being rate limited."
        assert 0 < body["retry_after"] <= 0.25 and body["global"] is False
        assert headers["Retry-After"] == "1" and headers["X-RateLimit-Scope"] == "user"
        assert headers["Via"]  # without it discord.py takes the 429 for a Cloudflare ban
        assert headers["X-RateLimit-Remaining"] == "0"
        assert fake.too_many_requests == 1 and fake.rate_limited["user"] == 1
        assert [c.status for c in fake.calls_matching("PUT", "/reactions/")] == [204, 429]
        # Another channel has its own bucket.
        other = 2001
        fake.add_channel(other)
        message = await post_message(fake, client, other)
        async with client.put(reaction_url(fake, other, message)) as response:
            assert response.status == 204
    finally:
        await fake.stop()


async def test_global_limit_spares_interactions(client: aiohttp.ClientSession) -> None:
    fake = await started(limits=RateLimits(global_per_s=3, default=Limit(100, 1.0)))
    try:
        statuses = []
        for _ in range(4):
            async with client.get(f"{fake.api_base}/users/@me") as response:
                statuses.append(response.status)
                last = response
                body = await response.json()
        assert statuses == [200, 200, 200, 429]
        assert body["global"] is True and body["retry_after"] <= 1.0
        assert last.headers["X-RateLimit-Global"] == "true"
        assert last.headers["X-RateLimit-Scope"] == "global"
        assert fake.rate_limited == {"global": 1}
        # Interaction callbacks and follow-ups are not bound by the global limit.
        interaction = await fake.invoke(fake.member("ann"), "genre", "new")
        async with client.post(
            f"{fake.api_base}/interactions/{interaction.id}/{interaction.token}/callback",
            json={"type": 5},
        ) as response:
            assert response.status == 200
    finally:
        await fake.stop()


async def test_ack_deadline_and_token_lifetime(client: aiohttp.ClientSession) -> None:
    fake = await started()
    try:
        ann = fake.member("ann")

        def callback_url(i: Any) -> str:
            return f"{fake.api_base}/interactions/{i.id}/{i.token}/callback"

        in_time = await fake.invoke(ann, "genre", "new")
        async with client.post(callback_url(in_time), json={"type": 5}) as response:
            assert response.status == 200
        latency = fake.ack_latencies()[in_time.token]
        assert latency is not None and 0 <= latency < 1.0
        async with client.post(callback_url(in_time), json={"type": 5}) as response:
            assert response.status == 400
            assert (await response.json())["code"] == 40060

        late = await fake.invoke(ann, "genre", "new")
        late.sent_at -= 3.1  # dispatched 3.1 s ago
        async with client.post(callback_url(late), json={"type": 5}) as response:
            assert response.status == 404
            assert await response.json() == {"message": "Unknown interaction", "code": 10062}
        assert late.ack_latency is None

        in_time.sent_at -= 15 * 60 + 1  # the token has expired
        followup = f"{fake.api_base}/webhooks/{fake.application_id}/{in_time.token}"
        async with client.post(followup, json={"content": "late"}) as response:
            assert response.status == 401
            assert (await response.json())["code"] == 50027
    finally:
        await fake.stop()


async def test_missing_permissions_and_limits_off(client: aiohttp.ClientSession) -> None:
    fake = await started(limits=None)
    try:
        message = await post_message(fake, client, fake.channel_id)
        fake.no_messages_in.add(fake.channel_id)
        fake.no_reactions_in.add(fake.channel_id)
        async with client.post(
            f"{fake.api_base}/channels/{fake.channel_id}/messages", json={"content": "x"}
        ) as response:
            assert response.status == 403
            assert await response.json() == {"message": "Missing Permissions", "code": 50013}
            assert "X-RateLimit-Limit" not in response.headers
        for _ in range(3):  # no limits: never a 429
            async with client.put(reaction_url(fake, fake.channel_id, message)) as response:
                assert response.status == 403
        assert fake.too_many_requests == 0
        # The interaction tells the bot what it may do in the channel.
        assert not fake.app_permissions_in(fake.channel_id) & 0x40
    finally:
        await fake.stop()


async def test_forced_rate_limit(client: aiohttp.ClientSession) -> None:
    fake = await started(limits=None)
    try:
        message = await post_message(fake, client, fake.channel_id)
        fake.force_rate_limit("PUT", "/reactions/", times=2, retry_after=0.5)
        statuses = []
        for _ in range(3):
            async with client.put(reaction_url(fake, fake.channel_id, message)) as response:
                statuses.append(response.status)
                if response.status == 429:
                    assert (await response.json())["retry_after"] == 0.5
        assert statuses == [429, 429, 204]
        assert fake.rate_limited == {"forced": 2}
    finally:
        await fake.stop()


async def test_followups_share_a_per_channel_webhook_limit_when_asked(
    client: aiohttp.ClientSession,
) -> None:
    # Follow-ups are webhook executions: 5 per 2 s per interaction token, and (opt-in,
    # channel_webhooks) Discord's shared 30 per 60 s of webhook messages per channel.
    fake = FakeDiscord(limits=RateLimits(channel_webhooks=Limit(2, 60.0)))
    fake.add_channel(2001)
    await fake.start()
    try:
        statuses = []
        for channel in (2000, 2000, 2000, 2001):
            interaction = await fake.invoke(fake.member("ann"), "genre", "new", channel_id=channel)
            async with client.post(
                f"{fake.api_base}/webhooks/{fake.application_id}/{interaction.token}",
                json={"content": "x"},
            ) as response:
                statuses.append(response.status)
                headers = response.headers
                if response.status == 429:
                    limited = (await response.json(), response.headers["X-RateLimit-Scope"])
        assert statuses == [200, 200, 429, 200]
        assert limited[1] == "shared" and limited[0]["global"] is False
        assert headers["X-RateLimit-Limit"] == "5"  # the token's own bucket
        assert fake.rate_limited == {"shared": 1}
    finally:
        await fake.stop()
