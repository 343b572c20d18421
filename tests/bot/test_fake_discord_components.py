"""The fake Discord's buttons, clicks and replies, as strict as Discord: components are
validated, a click is an INTERACTION_CREATE of type 3 with the message it sits on, answered
with a deferred update (6) or an update of that message (7) within 3 s; a reply must name a
message of its channel and needs Read Message History."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import discord
import pytest

from tests.fake_discord import FakeDiscord
from tests.fake_discord.components import flat_errors

pytestmark = pytest.mark.timeout(30)

BOT = {"Authorization": "Bot fake-token"}


def button(custom_id: str, label: str = "More like this") -> dict[str, Any]:
    return {"type": 2, "style": 1, "label": label, "custom_id": custom_id}


def rows(*buttons_per_row: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"type": 1, "components": list(b)} for b in buttons_per_row]


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    fake = FakeDiscord()
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(headers=BOT) as session:
        yield session


async def post(
    fake: FakeDiscord, client: aiohttp.ClientSession, body: dict[str, Any], channel: int = 0
) -> tuple[int, Any]:
    url = f"{fake.api_base}/channels/{channel or fake.channel_id}/messages"
    async with client.post(url, json=body) as response:
        return response.status, await response.json()


@pytest.mark.parametrize(
    ("components", "field"),
    [
        (rows(*[[button(f"b{r}")] for r in range(6)]), "components"),
        (rows([button(f"b{i}") for i in range(6)]), "components.0.components"),
        (rows([button("x" * 101)]), "components.0.components.0.custom_id"),
        (rows([button("ok", label="y" * 81)]), "components.0.components.0.label"),
        (rows([{"type": 2, "style": 1, "label": "no id"}]), "components.0.components.0.custom_id"),
        (rows([button("same"), button("same")]), "components.0.components.1.custom_id"),
        ([button("not in a row")], "components.0"),
    ],
)
async def test_components_are_validated_like_discord(
    fake: FakeDiscord, client: aiohttp.ClientSession, components: Any, field: str
) -> None:
    status, body = await post(fake, client, {"content": "x", "components": components})
    assert status == 400 and body["code"] == 50035
    assert field in flat_errors(body["errors"])


async def test_buttons_are_kept_on_the_message(
    fake: FakeDiscord, client: aiohttp.ClientSession
) -> None:
    components = rows([button("mg:more:1"), button("mg:weirder:1", "Weirder")])
    status, body = await post(fake, client, {"content": "x", "components": components})
    assert status == 200 and body["components"] == components
    assert fake.messages[int(body["id"])]["components"] == components


async def test_replies_need_a_message_of_the_channel_and_history(
    fake: FakeDiscord, client: aiohttp.ClientSession
) -> None:
    fake.limits = None  # more than 5 messages in the channel within 5 s
    fake.add_channel(2001)
    status, source = await post(fake, client, {"content": "source"})
    assert status == 200
    ref = {"message_id": source["id"]}
    status, reply = await post(fake, client, {"content": "r", "message_reference": ref})
    assert status == 200 and reply["type"] == 19
    assert reply["message_reference"]["message_id"] == source["id"]
    assert reply["referenced_message"]["id"] == source["id"]
    assert fake.replies_to(int(source["id"])) == [int(reply["id"])]
    # Another channel's message, a deleted one, an unknown id: Invalid Form Body.
    status, body = await post(fake, client, {"content": "r", "message_reference": ref}, 2001)
    assert status == 400 and "message_reference.message_id" in flat_errors(body["errors"])
    fake.delete_message(int(source["id"]))
    status, body = await post(fake, client, {"content": "r", "message_reference": ref})
    assert status == 400 and body["code"] == 50035
    # ... unless the bot said not to mind: then it is a plain message.
    lenient = {**ref, "fail_if_not_exists": False}
    status, plain = await post(fake, client, {"content": "r", "message_reference": lenient})
    assert status == 200 and plain["type"] == 0 and "message_reference" not in plain
    # A reply needs Read Message History.
    _, other = await post(fake, client, {"content": "s"})
    fake.no_history_in.add(fake.channel_id)
    status, body = await post(
        fake, client, {"content": "r", "message_reference": {"message_id": other["id"]}}
    )
    assert status == 403 and body["code"] == 50013


async def test_a_click_needs_the_button_and_follows_the_ack_rules(
    fake: FakeDiscord, client: aiohttp.ClientSession
) -> None:
    _, message = await post(fake, client, {"content": "x", "components": rows([button("a:1")])})
    ann = fake.member("ann")
    with pytest.raises(ValueError, match="no button"):
        await fake.click(ann, int(message["id"]), "a:2")

    def callback(i: Any) -> str:
        return f"{fake.api_base}/interactions/{i.id}/{i.token}/callback"

    click = await fake.click(ann, int(message["id"]), "a:1")
    async with client.post(callback(click), json={"type": 6}) as response:
        assert response.status == 200
    async with client.post(callback(click), json={"type": 6}) as response:
        assert response.status == 400 and (await response.json())["code"] == 40060
    # The deferred update's @original is the message the button sits on.
    original = f"{fake.api_base}/webhooks/{fake.application_id}/{click.token}/messages/@original"
    async with client.patch(original, json={"content": "edited", "components": []}) as response:
        assert response.status == 200
    assert fake.messages[int(message["id"])]["content"] == "edited"

    _, other = await post(fake, client, {"content": "y", "components": rows([button("b:1")])})
    late_click = await fake.click(ann, int(other["id"]), "b:1")
    late_click.sent_at -= 3.1
    async with client.post(callback(late_click), json={"type": 6}) as response:
        assert response.status == 404 and (await response.json())["code"] == 10062
    # An update (7) edits the message in place; 6 and 7 are for components only.
    update = await fake.click(ann, int(other["id"]), "b:1")
    body = {"type": 7, "data": {"content": "updated", "components": []}}
    async with client.post(callback(update), json=body) as response:
        assert response.status == 200
    assert fake.messages[int(other["id"])]["content"] == "updated"
    assert fake.messages[int(other["id"])]["components"] == []
    command = await fake.invoke(ann, "genre", "new")
    async with client.post(callback(command), json={"type": 6}) as response:
        assert response.status == 400 and (await response.json())["code"] == 50035


class Echo(discord.ui.DynamicItem[discord.ui.Button[Any]], template=r"echo:(?P<n>[0-9]+)"):
    """Answers a click with a deferred update, then an ephemeral follow-up naming ``n``."""

    def __init__(self, n: int) -> None:
        super().__init__(discord.ui.Button(label="Echo", custom_id=f"echo:{n}"))
        self.n = n

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction[Any], item: Any, match: re.Match[str], /
    ) -> Echo:
        return cls(int(match["n"]))

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        await interaction.response.defer()
        await interaction.followup.send(f"echo {self.n}", ephemeral=True)


async def test_real_discord_py_sends_buttons_and_answers_clicks(
    fake: FakeDiscord, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake.patch(monkeypatch)
    bot = discord.Client(intents=discord.Intents.none())
    bot.add_dynamic_items(Echo)
    task = asyncio.get_running_loop().create_task(bot.start("fake-token"))
    try:
        await asyncio.wait_for(bot.wait_until_ready(), 10)
        channel = bot.get_partial_messageable(fake.channel_id, guild_id=fake.guild_id)
        view = discord.ui.View(timeout=None)
        view.add_item(Echo(7))
        source = await channel.send("source")
        sent = await channel.send("with a button", view=view, reference=source)
        stored = fake.messages[sent.id]
        assert stored["components"][0]["components"][0]["custom_id"] == "echo:7"
        assert stored["message_reference"]["message_id"] == str(source.id)
        click = await fake.click(fake.member("ann"), sent.id, "echo:7")
        await fake.wait_for(lambda: fake.ephemerals(click))
        assert fake.ephemerals(click) == ["echo 7"]
        assert fake.calls_matching("POST", f"/interactions/{click.id}/")[0].json == {"type": 6}
        assert click.ack_latency is not None and click.ack_latency < 3.0
    finally:
        await bot.close()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 10)
