"""A fake Discord (REST + gateway) on 127.0.0.1 for driving the real discord.py client.

Point discord.py at it with :meth:`FakeDiscord.patch` (``discord.http.Route.BASE`` and
``discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY``). It implements what the bot uses:

* gateway: HELLO, IDENTIFY → READY + GUILD_CREATE, heartbeat ACKs, RESUME → RESUMED,
  :meth:`FakeDiscord.cut_gateway` (a resumable close; reconnections wait for
  :meth:`FakeDiscord.reopen_gateway`, and events meanwhile reach nobody), and
  :meth:`FakeDiscord.dispatch` for any event (INTERACTION_CREATE, MESSAGE_REACTION_ADD/REMOVE),
  :meth:`FakeDiscord.remove_channel` (CHANNEL_DELETE);
  a connection that identifies as ``shard: [id, count]`` gets only the guilds, and the events
  of the guilds, of its shard (:func:`shard_for`), so several bot processes can split them;
* REST: ``/users/@me``, ``/oauth2/applications/@me``, ``/gateway/bot``, application command
  sync (global and guild), interaction callbacks, webhook follow-ups and ``@original`` edits,
  channel messages, reactions (the bot's own reactions are echoed back as gateway events, as
  Discord does); reading a message back (``GET``, with its ``reactions`` counts and ``me``)
  and the users of one reaction (``GET .../reactions/{emoji}``, sorted by id, paginated with
  ``after`` and ``limit`` ≤ 100, normal or super reactions by ``type``);
* buttons: messages carry ``components`` (action rows of buttons, validated as Discord does in
  ``components.py``), :meth:`FakeDiscord.click` sends a click as Discord does (INTERACTION_CREATE
  type 3 with ``data.custom_id``, ``data.component_type`` 2 and the ``message`` the button sits
  on), answered with 4/5 (a new message), 6 (deferred update) or 7 (update of that message)
  under the same deadline, rate limits and permissions as a slash command;
* replies: ``message_reference`` must name a message of the channel (400 Invalid Form Body
  otherwise, unless ``fail_if_not_exists`` is false) and needs Read Message History;
  :meth:`FakeDiscord.replies_to` lists them.

Every REST call is recorded in :attr:`FakeDiscord.calls` with the status it got; unknown routes
answer 404 and are recorded too, so a test can assert nothing unexpected was called.

It is as strict as Discord where a bot can get it wrong (see ``limits.py``): per-route rate
limit buckets with ``X-RateLimit-*`` headers and 429s, the global limit of 50 requests/s,
Missing Permissions (403, code 50013) in channels listed in :attr:`FakeDiscord.no_reactions_in`
or :attr:`FakeDiscord.no_messages_in`, Missing Access (403, code 50001) where the bot may not
see the channel (:attr:`FakeDiscord.no_view_in`) or read its history
(:attr:`FakeDiscord.no_history_in`), Unknown Message / Unknown Channel (404) for deleted,
ephemeral or misplaced messages and deleted channels, Invalid Form Body (400, code 50035) for
bad paging parameters, the bot's permission overwrites in GUILD_CREATE for the channels of those
sets (so that its cached permissions agree), the 3-second deadline to acknowledge an interaction
(later: 404 Unknown interaction, code 10062) and the 15-minute life of its token. Pass
``limits=None`` to turn the rate limits off.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote

from aiohttp import WSMsgType, web

from tests.fake_discord.components import component_errors, custom_ids, nested_errors
from tests.fake_discord.limits import (
    FixedWindows,
    Limit,
    RateLimits,
    Verdict,
    classify,
    too_many_requests_body,
    too_many_requests_headers,
)

API_PREFIX = "/api/v10"
DISCORD_EPOCH_MS = 1420070400000
ALL_PERMISSIONS = (1 << 50) - 1
MEMBER_PERMISSIONS = (
    0x0000000000000400 | 0x0000000000000800 | 0x0000000000000040
)  # view, send, react
MANAGE_GUILD = 0x20
ADD_REACTIONS = 0x40
VIEW_CHANNEL = 0x400
SEND_MESSAGES = 0x800
READ_MESSAGE_HISTORY = 0x10000
# Discord's default and largest page of GET .../reactions/{emoji}.
REACTION_USERS_DEFAULT_LIMIT = 25
REACTION_USERS_MAX_LIMIT = 100
# Interaction types and the callback types each may use (4/5: a message, 6/7: for components,
# a deferred update or an update of the message the component sits on).
APPLICATION_COMMAND = 2
MESSAGE_COMPONENT = 3
CALLBACKS = {APPLICATION_COMMAND: {4, 5}, MESSAGE_COMPONENT: {4, 5, 6, 7}}
REPLY = 19  # the message type of a reply
# Discord's limits on an interaction: acknowledge it within 3 s; its token lives 15 minutes.
ACK_DEADLINE_S = 3.0
TOKEN_LIFETIME_S = 15 * 60.0


def snowflake(counter: itertools.count[int]) -> int:
    return ((int(time.time() * 1000) - DISCORD_EPOCH_MS) << 22) + next(counter) % (1 << 22)


def shard_for(guild_id: int, shard_count: int) -> int:
    """The shard that receives a guild's events (Discord's formula).

    >>> shard_for(1000, 2), shard_for(3 << 22, 2)
    (0, 1)
    """
    return (guild_id >> 22) % shard_count


def iso_now() -> str:
    return datetime.now(UTC).isoformat()


@dataclass
class RecordedCall:
    method: str
    path: str  # without the /api/v10 prefix
    query: dict[str, str]
    json: Any = None
    files: list[str] = field(default_factory=list)
    at: float = field(default_factory=time.monotonic)
    status: int | None = None  # the HTTP status answered
    auth: str | None = None  # the Authorization header (which bot process, by its token)


@dataclass
class FakeUser:
    id: int
    username: str
    bot: bool = False

    def payload(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "username": self.username,
            "discriminator": "0",
            "global_name": self.username,
            "avatar": None,
            "bot": self.bot,
            "public_flags": 0,
        }

    def member(self, permissions: int) -> dict[str, Any]:
        return {
            "user": self.payload(),
            "roles": [],
            "joined_at": "2024-01-01T00:00:00+00:00",
            "deaf": False,
            "mute": False,
            "flags": 0,
            "pending": False,
            "nick": None,
            "avatar": None,
            "permissions": str(permissions),
        }


@dataclass
class Interaction:
    id: int
    token: str
    user: FakeUser
    guild_id: int
    channel_id: int
    sent_at: float
    acked_at: float | None = None  # when the callback (the acknowledgement) arrived in time
    type: int = APPLICATION_COMMAND
    message_id: int | None = None  # a click's: the message its button sits on
    custom_id: str | None = None  # a click's: the button's

    @property
    def ack_latency(self) -> float | None:
        """Seconds from INTERACTION_CREATE to the acknowledgement; None while unacknowledged."""
        return None if self.acked_at is None else self.acked_at - self.sent_at


@dataclass(frozen=True)
class ChannelOption:
    """A channel as the value of a slash command option (type 7, resolved like Discord)."""

    id: int


@dataclass(frozen=True)
class ForcedRateLimit:
    """Answer the next ``times`` calls matching ``method`` and ``path_contains`` with 429."""

    method: str
    path_contains: str
    retry_after: float


class FakeDiscord:
    """See the module docstring."""

    def __init__(
        self,
        *,
        guild_id: int = 1000,
        channel_id: int = 2000,
        limits: RateLimits | None = RateLimits(),  # noqa: B008 (frozen, shared safely)
        ack_deadline_s: float = ACK_DEADLINE_S,
        token_lifetime_s: float = TOKEN_LIFETIME_S,
    ) -> None:
        self._ids = itertools.count(1)
        self.bot_user = FakeUser(900001, "microgenre", bot=True)
        self.application_id = self.bot_user.id
        self.owner = FakeUser(900002, "owner")
        self.guild_id = guild_id
        self.channel_id = channel_id
        self.channel_ids: list[int] = [channel_id]  # text channels of the guild
        # Every guild the bot is in -> its text channels (``add_guild``); empty: in no server.
        self.guilds: dict[int, list[int]] = {guild_id: self.channel_ids}
        self.limits = limits
        self.ack_deadline_s = ack_deadline_s
        self.token_lifetime_s = token_lifetime_s
        self._windows = FixedWindows()
        self._forced: list[ForcedRateLimit] = []
        # 429s served, by scope: "user" (a route bucket), "global", "shared", "forced".
        self.rate_limited: Counter[str] = Counter()
        self.calls: list[RecordedCall] = []
        self.messages: dict[int, dict[str, Any]] = {}
        self.originals: dict[str, int] = {}  # interaction token -> message id
        # message id -> emoji -> the users who reacted (normal reactions / super reactions).
        self.reactions: dict[int, dict[str, set[int]]] = {}
        self.burst_reactions: dict[int, dict[str, set[int]]] = {}
        # Everyone the fake has seen, by id (the users endpoint answers with their objects).
        self.users: dict[int, FakeUser] = {self.bot_user.id: self.bot_user}
        self.commands: dict[str, list[dict[str, Any]]] = {}  # "global" or "guild:<id>"
        self.interactions: dict[str, Interaction] = {}
        # Channels where the bot may not add reactions / send messages (403, code 50013).
        self.no_reactions_in: set[int] = set()
        self.no_messages_in: set[int] = set()
        # Channels the bot may not see at all / whose history it may not read (403, 50001).
        self.no_view_in: set[int] = set()
        self.no_history_in: set[int] = set()
        # Channels deleted (every channel route answers 404 Unknown Channel, code 10003).
        self.deleted_channels: set[int] = set()
        # Answer 401 to the login, as Discord does for a wrong token.
        self.reject_token = False
        # Close the gateway with 4014 on IDENTIFY (a privileged intent not enabled).
        self.refuse_intents = False
        self.identified = asyncio.Event()
        self.identify_count = 0
        self.resume_count = 0
        # Cleared by cut_gateway: a new connection gets its HELLO once it is set again.
        self._gateway_open = asyncio.Event()
        self._gateway_open.set()
        self._sockets: list[web.WebSocketResponse] = []
        # The ``[shard_id, shard_count]`` each connection identified with (absent: unsharded).
        self.shard_of_socket: dict[web.WebSocketResponse, tuple[int, int]] = {}
        self._seq = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self.port = 0
        self._changed = asyncio.Condition()

    # ------------------------------------------------------------------ lifecycle

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_base(self) -> str:
        return f"{self.base_url}{API_PREFIX}"

    @property
    def gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/gateway"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/gateway", self._gateway)
        app.router.add_route("*", API_PREFIX + "/{tail:.*}", self._rest)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        sockets = getattr(site._server, "sockets", None)
        assert sockets
        self.port = sockets[0].getsockname()[1]

    async def stop(self) -> None:
        for ws in list(self._sockets):
            await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    def patch(self, monkeypatch: Any) -> None:
        """Point the discord.py classes at this server for the test's duration."""
        import yarl
        from discord.gateway import DiscordWebSocket
        from discord.http import Route

        monkeypatch.setattr(Route, "BASE", self.api_base)
        monkeypatch.setattr(DiscordWebSocket, "DEFAULT_GATEWAY", yarl.URL(self.gateway_url))

    @property
    def too_many_requests(self) -> int:
        """How many 429s were served (all scopes)."""
        return sum(self.rate_limited.values())

    def ack_latencies(self) -> dict[str, float | None]:
        """Acknowledgement latency of every interaction (None: never acknowledged in time)."""
        return {token: i.ack_latency for token, i in self.interactions.items()}

    def add_channel(self, channel_id: int) -> None:
        """Another text channel in the guild (call before the bot connects)."""
        if channel_id not in self.channel_ids:
            self.channel_ids.append(channel_id)

    def add_guild(self, guild_id: int, channel_id: int) -> None:
        """Another guild with one text channel (call before the bot connects)."""
        self.guilds.setdefault(guild_id, []).append(channel_id)

    def guild_of(self, channel_id: int) -> int:
        """The guild holding ``channel_id`` (the first guild for an unknown channel)."""
        found = (g for g, channels in self.guilds.items() if channel_id in channels)
        return next(found, self.guild_id)

    def force_rate_limit(
        self, method: str, path_contains: str, *, times: int = 5, retry_after: float = 0.01
    ) -> None:
        """Answer the next ``times`` matching calls with a 429 (discord.py retries 5 times)."""
        self._forced.extend([ForcedRateLimit(method, path_contains, retry_after)] * times)

    def app_permissions_in(self, channel_id: int) -> int:
        """The bot's permissions in ``channel_id`` (as Discord computes ``app_permissions``)."""
        permissions = ALL_PERMISSIONS
        if channel_id in self.no_reactions_in:
            permissions &= ~ADD_REACTIONS
        if channel_id in self.no_messages_in:
            permissions &= ~SEND_MESSAGES
        if channel_id in self.no_history_in:
            permissions &= ~READ_MESSAGE_HISTORY
        if channel_id in self.no_view_in:
            permissions &= ~VIEW_CHANNEL
        return permissions

    def delete_message(self, message_id: int) -> None:
        """Delete a message (as a moderator would): every route then answers Unknown Message."""
        self.messages[message_id]["_deleted"] = True

    def delete_channel(self, channel_id: int) -> None:
        """Delete a channel: every route under it then answers Unknown Channel."""
        self.deleted_channels.add(channel_id)

    async def remove_channel(self, channel_id: int) -> None:
        """Delete a channel and tell the connected clients (CHANNEL_DELETE), as Discord does."""
        self.delete_channel(channel_id)
        guild_id = self.guild_of(channel_id)
        position = self.guilds.get(guild_id, []).index(channel_id)
        await self.dispatch("CHANNEL_DELETE", self.channel_payload(guild_id, channel_id, position))

    # ------------------------------------------------------------------ payloads

    def guild_payload(self, guild_id: int | None = None) -> dict[str, Any]:
        guild_id = self.guild_id if guild_id is None else guild_id
        everyone = {
            "id": str(guild_id),
            "name": "@everyone",
            "permissions": str(MEMBER_PERMISSIONS),
            "position": 0,
            "color": 0,
            "hoist": False,
            "managed": False,
            "mentionable": False,
            "flags": 0,
        }
        channels = [
            self.channel_payload(guild_id, channel_id, position)
            for position, channel_id in enumerate(self.guilds.get(guild_id, []))
            if channel_id not in self.deleted_channels
        ]
        return {
            "id": str(guild_id),
            "name": "Test Server",
            "icon": None,
            "owner_id": str(self.owner.id),
            "roles": [everyone],
            "emojis": [],
            "stickers": [],
            "features": [],
            "channels": channels,
            "threads": [],
            "members": [{k: v for k, v in self.bot_user.member(0).items() if k != "permissions"}],
            "presences": [],
            "voice_states": [],
            "stage_instances": [],
            "guild_scheduled_events": [],
            "soundboard_sounds": [],
            "member_count": 3,
            "large": False,
            "unavailable": False,
            "joined_at": "2024-01-01T00:00:00+00:00",
            "verification_level": 0,
            "default_message_notifications": 0,
            "explicit_content_filter": 0,
            "mfa_level": 0,
            "nsfw_level": 0,
            "premium_tier": 0,
            "preferred_locale": "en-US",
            "system_channel_id": None,
            "system_channel_flags": 0,
            "afk_timeout": 300,
        }

    def channel_payload(self, guild_id: int, channel_id: int, position: int) -> dict[str, Any]:
        """A text channel, with the bot's member overwrite denying what it may not do there
        (:meth:`app_permissions_in`), so that discord.py's cached permissions agree."""
        denied = ALL_PERMISSIONS & ~self.app_permissions_in(channel_id)
        overwrites = [{"id": str(self.bot_user.id), "type": 1, "allow": "0", "deny": str(denied)}]
        return {
            "id": str(channel_id),
            "type": 0,
            "guild_id": str(guild_id),
            "name": "genres" if position == 0 else f"genres-{position}",
            "position": position,
            "permission_overwrites": overwrites if denied else [],
            "nsfw": False,
            "parent_id": None,
            "topic": None,
            "last_message_id": None,
            "rate_limit_per_user": 0,
        }

    def message_payload(
        self,
        message_id: int,
        channel_id: int,
        content: str,
        *,
        embeds: list[Any] | None = None,
        attachments: list[str] | None = None,
        interaction_token: str | None = None,
        flags: int = 0,
        components: list[Any] | None = None,
        reference: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        message = {
            "id": str(message_id),
            "channel_id": str(channel_id),
            "guild_id": str(self.guild_of(channel_id)),
            "author": self.bot_user.payload(),
            "content": content,
            "timestamp": iso_now(),
            "edited_timestamp": None,
            "tts": False,
            "mention_everyone": False,
            "mentions": [],
            "mention_roles": [],
            "attachments": [
                {
                    "id": str(snowflake(self._ids)),
                    "filename": name,
                    "size": 1,
                    "url": f"{self.base_url}/attachments/{name}",
                    "proxy_url": f"{self.base_url}/attachments/{name}",
                }
                for name in attachments or []
            ],
            "embeds": embeds or [],
            "pinned": False,
            "type": 0 if interaction_token is None else 20,
            "flags": flags,
            "webhook_id": str(self.application_id) if interaction_token else None,
            "application_id": str(self.application_id) if interaction_token else None,
            "components": components or [],
        }
        message["_at"] = time.monotonic()  # when it was created (for benchmarks)
        if reference is not None:
            message["type"] = REPLY
            message["message_reference"] = {
                "type": 0,
                "message_id": str(reference["id"]),
                "channel_id": str(channel_id),
                "guild_id": str(self.guild_of(channel_id)),
            }
            message["referenced_message"] = self._public(reference)
        return message

    # ------------------------------------------------------------------ gateway

    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        await self._gateway_open.wait()
        self._sockets.append(ws)
        await ws.send_str(
            json.dumps({"op": 10, "d": {"heartbeat_interval": 41250}, "s": None, "t": None})
        )
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                data = json.loads(msg.data)
                op = data.get("op")
                if op == 1:
                    await ws.send_str(json.dumps({"op": 11, "d": None}))
                elif op == 2:
                    self.identify_count += 1
                    if self.refuse_intents:
                        await ws.close(code=4014, message=b"Disallowed intent(s).")
                        break
                    await self._send_ready(ws, data["d"])
                elif op == 6:
                    self.resume_count += 1
                    await self._send(ws, "RESUMED", {})
        finally:
            if ws in self._sockets:
                self._sockets.remove(ws)
            self.shard_of_socket.pop(ws, None)
        return ws

    async def _send(self, ws: web.WebSocketResponse, event: str, data: Any) -> None:
        await ws.send_str(json.dumps({"op": 0, "t": event, "s": next(self._seq), "d": data}))

    async def _send_ready(self, ws: web.WebSocketResponse, identify: dict[str, Any]) -> None:
        ready: dict[str, Any] = {
            "v": 10,
            "user": self.bot_user.payload(),
            "guilds": [{"id": str(g), "unavailable": True} for g in self.guilds],
            "session_id": "fake-session",
            "resume_gateway_url": self.gateway_url,
            "application": {"id": str(self.application_id), "flags": 0},
            "private_channels": [],
            "relationships": [],
        }
        if identify.get("shard") is not None:
            ready["shard"] = identify["shard"]
            shard_id, shard_count = (int(x) for x in identify["shard"])
            self.shard_of_socket[ws] = (shard_id, shard_count)
        guilds = [g for g in self.guilds if self._routes_to(ws, g)]
        ready["guilds"] = [{"id": str(g), "unavailable": True} for g in guilds]
        await self._send(ws, "READY", ready)
        for guild_id in guilds:
            await self._send(ws, "GUILD_CREATE", self.guild_payload(guild_id))
        self.identified.set()

    async def dispatch(self, event: str, data: Any) -> None:
        """Send a gateway event to every connected client; a guild's event only to the
        connection of the shard that owns the guild, as Discord routes them."""
        guild = data.get("guild_id") if isinstance(data, dict) else None
        for ws in list(self._sockets):
            if not ws.closed and (guild is None or self._routes_to(ws, int(guild))):
                await self._send(ws, event, data)

    async def cut_gateway(self) -> None:
        """Close every gateway connection with a resumable code (4000, as after a network
        fault); clients reconnect at once but get no HELLO until :meth:`reopen_gateway`."""
        self._gateway_open.clear()
        for ws in list(self._sockets):
            await ws.close(code=4000, message=b"Unknown error")

    def reopen_gateway(self) -> None:
        self._gateway_open.set()

    def _routes_to(self, ws: web.WebSocketResponse, guild_id: int) -> bool:
        shard = self.shard_of_socket.get(ws)
        return shard is None or shard_for(guild_id, shard[1]) == shard[0]

    def shards_connected(self) -> list[tuple[int, int]]:
        """The ``(shard_id, shard_count)`` of every open, identified connection."""
        return sorted(s for ws, s in self.shard_of_socket.items() if not ws.closed)

    # ------------------------------------------------------------------ test helpers

    def member(self, name: str, *, user_id: int | None = None, bot: bool = False) -> FakeUser:
        user = FakeUser(user_id or snowflake(self._ids), name, bot=bot)
        self.users[user.id] = user
        return user

    async def invoke(
        self,
        user: FakeUser,
        command: str,
        subcommand: str | None = None,
        options: dict[str, Any] | None = None,
        *,
        permissions: int = MEMBER_PERMISSIONS,
        app_permissions: int | None = None,
        channel_id: int | None = None,
        guild_id: int | None = None,
    ) -> Interaction:
        """Dispatch an INTERACTION_CREATE for ``/command [subcommand] options``
        (``subcommand`` may be ``"group subcommand"``; a :class:`ChannelOption` value is a
        channel option, resolved as Discord does).

        ``app_permissions`` defaults to what the bot may do in the channel
        (:meth:`app_permissions_in`); ``channel_id`` to the first channel of ``guild_id``
        (default: the first guild).
        """
        guild_id = self.guild_id if guild_id is None else guild_id
        channel_id = self.guilds[guild_id][0] if channel_id is None else channel_id
        if app_permissions is None:
            app_permissions = self.app_permissions_in(channel_id)
        types = {bool: 5, int: 4, float: 10, str: 3}
        option_list: list[dict[str, Any]] = []
        for key, value in (options or {}).items():
            if isinstance(value, FakeUser):
                option_list.append({"name": key, "type": 6, "value": str(value.id)})
            elif isinstance(value, ChannelOption):
                option_list.append({"name": key, "type": 7, "value": str(value.id)})
            else:
                option_list.append({"name": key, "type": types[type(value)], "value": value})
        data: dict[str, Any] = {"id": str(snowflake(self._ids)), "name": command, "type": 1}
        if subcommand is None:
            data["options"] = option_list
        else:
            *group, name = subcommand.split()
            data["options"] = [{"name": name, "type": 1, "options": option_list}]
            if group:
                data["options"] = [{"name": group[0], "type": 2, "options": data["options"]}]
        resolved_users = {
            str(v.id): v.payload() for v in (options or {}).values() if isinstance(v, FakeUser)
        }
        if resolved_users:
            data["resolved"] = {"users": resolved_users}
        resolved_channels = {
            str(v.id): {**self.channel_payload(guild_id, v.id, 0), "permissions": str(permissions)}
            for v in (options or {}).values()
            if isinstance(v, ChannelOption)
        }
        if resolved_channels:
            data.setdefault("resolved", {})["channels"] = resolved_channels
        if f"guild:{guild_id}" in self.commands:
            data["guild_id"] = str(guild_id)
        interaction_id = snowflake(self._ids)
        token = f"token-{interaction_id}"
        payload = self._interaction_payload(
            interaction_id, token, user, guild_id, channel_id, permissions, app_permissions
        )
        payload["data"] = data
        interaction = Interaction(
            interaction_id, token, user, guild_id, channel_id, time.monotonic()
        )
        self.interactions[token] = interaction
        await self.dispatch("INTERACTION_CREATE", payload)
        return interaction

    def _interaction_payload(
        self,
        interaction_id: int,
        token: str,
        user: FakeUser,
        guild_id: int,
        channel_id: int,
        permissions: int,
        app_permissions: int,
    ) -> dict[str, Any]:
        """An INTERACTION_CREATE payload, less its ``data`` (and ``message``)."""
        return {
            "id": str(interaction_id),
            "application_id": str(self.application_id),
            "type": APPLICATION_COMMAND,
            "guild_id": str(guild_id),
            "guild": {"id": str(guild_id), "features": [], "locale": "en-US"},
            "channel_id": str(channel_id),
            "channel": {
                "id": str(channel_id),
                "type": 0,
                "name": "genres",
                "guild_id": str(guild_id),
                "permissions": str(permissions),
                "nsfw": False,
                "parent_id": None,
                "position": 0,
            },
            "member": user.member(permissions),
            "token": token,
            "version": 1,
            "app_permissions": str(app_permissions),
            "locale": "en-US",
            "guild_locale": "en-US",
            "entitlements": [],
            "authorizing_integration_owners": {"0": str(guild_id)},
            "context": 0,
            "attachment_size_limit": 8 * 1024 * 1024,
        }

    async def click(
        self,
        user: FakeUser,
        message_id: int,
        custom_id: str,
        *,
        permissions: int = MEMBER_PERMISSIONS,
        app_permissions: int | None = None,
    ) -> Interaction:
        """``user`` clicks the button ``custom_id`` of ``message_id``: an INTERACTION_CREATE of
        type 3 with the message it sits on, as Discord sends it. ValueError when the message
        has no such button (a user can only click what is there)."""
        message = self.messages.get(message_id)
        if message is None or custom_id not in custom_ids(message.get("components")):
            raise ValueError(f"message {message_id} has no button {custom_id!r}")
        channel_id = int(message["channel_id"])
        guild_id = self.guild_of(channel_id)
        self.users.setdefault(user.id, user)
        if app_permissions is None:
            app_permissions = self.app_permissions_in(channel_id)
        interaction_id = snowflake(self._ids)
        token = f"token-{interaction_id}"
        payload = self._interaction_payload(
            interaction_id, token, user, guild_id, channel_id, permissions, app_permissions
        )
        payload["type"] = MESSAGE_COMPONENT
        payload["data"] = {"custom_id": custom_id, "component_type": 2}
        payload["message"] = self._public(message)
        interaction = Interaction(
            interaction_id,
            token,
            user,
            guild_id,
            channel_id,
            time.monotonic(),
            type=MESSAGE_COMPONENT,
            message_id=message_id,
            custom_id=custom_id,
        )
        self.interactions[token] = interaction
        await self.dispatch("INTERACTION_CREATE", payload)
        return interaction

    def replies_to(self, message_id: int) -> list[int]:
        """Ids of the (not deleted) replies to ``message_id``, in order."""
        return [
            int(m["id"])
            for m in self.messages.values()
            if not m.get("_deleted")
            and (m.get("message_reference") or {}).get("message_id") == str(message_id)
        ]

    def ephemerals(self, interaction: Interaction) -> list[str]:
        """The contents of the ephemeral messages ``interaction`` got, in order."""
        return [
            str(m.get("content", ""))
            for m in self.messages.values()
            if m.get("_token") == interaction.token and m.get("_ephemeral")
        ]

    async def react(
        self, user: FakeUser, message_id: int, emoji: str, *, add: bool = True, burst: bool = False
    ) -> None:
        """Dispatch MESSAGE_REACTION_ADD (with member) or MESSAGE_REACTION_REMOVE (``burst``: a
        super reaction). Only connected clients get the event: while the bot is down, the
        reaction changes on Discord and the bot hears nothing of it."""
        self.users.setdefault(user.id, user)
        message = self.messages.get(message_id)
        channel_id = int(message["channel_id"]) if message else self.channel_id
        data: dict[str, Any] = {
            "user_id": str(user.id),
            "channel_id": str(channel_id),
            "message_id": str(message_id),
            "guild_id": str(self.guild_of(channel_id)),
            "emoji": {"id": None, "name": emoji},
            "burst": burst,
            "type": 1 if burst else 0,
        }
        by_emoji = self.burst_reactions if burst else self.reactions
        users = by_emoji.setdefault(message_id, {}).setdefault(emoji, set())
        if add:
            users.add(user.id)
            data["member"] = user.member(MEMBER_PERMISSIONS)
            data["message_author_id"] = str(self.bot_user.id)
            data["burst_colors"] = []
            await self.dispatch("MESSAGE_REACTION_ADD", data)
        else:
            users.discard(user.id)
            await self.dispatch("MESSAGE_REACTION_REMOVE", data)

    def calls_matching(self, method: str, path_contains: str) -> list[RecordedCall]:
        return [c for c in self.calls if c.method == method and path_contains in c.path]

    async def wait_for(self, predicate: Callable[[], Any], within: float = 10.0) -> Any:
        """Wait until ``predicate()`` is truthy (re-checked after every REST call)."""
        deadline = time.monotonic() + within
        async with self._changed:
            while True:
                value = predicate()
                if value:
                    return value
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError("fake Discord: condition not reached")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), min(remaining, 0.2))

    def followups(self, interaction: Interaction) -> list[dict[str, Any]]:
        """Messages posted as follow-ups of ``interaction`` (not ephemeral), in order."""
        return [
            m
            for m in self.messages.values()
            if m.get("_token") == interaction.token and not m.get("_original")
        ]

    def original(self, interaction: Interaction) -> dict[str, Any] | None:
        mid = self.originals.get(interaction.token)
        return None if mid is None else self.messages.get(mid)

    # ------------------------------------------------------------------ REST

    @staticmethod
    def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
        if status == 204:
            return web.Response(status=204, headers=headers)
        # discord.py checks the content type for equality with "application/json".
        return web.Response(
            status=status,
            body=json.dumps(data).encode(),
            headers={"Content-Type": "application/json", **(headers or {})},
        )

    def _rate_limited(self, retry_after: float, scope: str) -> web.Response:
        self.rate_limited[scope] += 1
        return self._json(
            too_many_requests_body(retry_after, is_global=scope == "global"),
            status=429,
            headers=too_many_requests_headers(retry_after, scope=scope),
        )

    def _forced_limit(self, call: RecordedCall) -> web.Response | None:
        for forced in self._forced:
            if forced.method == call.method and forced.path_contains in call.path:
                self._forced.remove(forced)
                return self._rate_limited(forced.retry_after, "forced")
        return None

    def _take(self, call: RecordedCall) -> tuple[web.Response | None, Verdict | None]:
        """Count ``call`` against the global limit and its bucket: a 429, or the verdict."""
        forced = self._forced_limit(call)
        if forced is not None or self.limits is None:
            return forced, None
        bucket = classify(call.method, call.path, self.limits)
        if bucket.global_limited:
            verdict = self._windows.take(("global", ""), Limit(self.limits.global_per_s, 1.0))
            if not verdict.allowed:
                return self._rate_limited(max(verdict.reset_after, 0.001), "global"), None
        verdict = self._windows.take((bucket.hash, bucket.major), bucket.limit)
        if not verdict.allowed:
            response = self._rate_limited(max(verdict.reset_after, 0.001), "user")
            response.headers.update(verdict.headers(time.time()))
            return response, None
        return self._channel_webhook_limit(call), verdict

    def _channel_webhook_limit(self, call: RecordedCall) -> web.Response | None:
        """A 429 (scope "shared") when ``call`` creates a webhook message in a channel that
        has had ``RateLimits.channel_webhooks`` of them in its window."""
        limit = self.limits.channel_webhooks if self.limits else None
        parts = call.path.strip("/").split("/")
        if limit is None or call.method != "POST" or parts[0] != "webhooks" or len(parts) != 3:
            return None
        interaction = self.interactions.get(parts[2])
        if interaction is None:
            return None
        verdict = self._windows.take(("channel-webhooks", str(interaction.channel_id)), limit)
        if verdict.allowed:
            return None
        return self._rate_limited(max(verdict.reset_after, 0.001), "shared")

    async def _read_body(self, request: web.Request) -> tuple[Any, list[str]]:
        if request.content_type == "multipart/form-data":
            form = await request.post()
            files: list[str] = []
            payload: Any = None
            for key, value in form.items():
                if key == "payload_json":
                    payload = json.loads(str(value))
                elif hasattr(value, "filename"):
                    files.append(value.filename)
            return payload, files
        if request.can_read_body:
            text = await request.text()
            return (json.loads(text) if text else None), []
        return None, []

    async def _rest(self, request: web.Request) -> web.Response:
        path = "/" + request.match_info["tail"]
        body, files = await self._read_body(request)
        call = RecordedCall(request.method, unquote(path), dict(request.query), body, files)
        call.auth = request.headers.get("Authorization")
        self.calls.append(call)
        try:
            limited, verdict = self._take(call)
            response = limited or await self._route(call)
            if verdict is not None:
                response.headers.update(verdict.headers(time.time()))
            call.status = response.status
            return response
        finally:
            async with self._changed:
                self._changed.notify_all()

    async def _route(self, call: RecordedCall) -> web.Response:
        m, parts = call.method, call.path.strip("/").split("/")
        body = call.json or {}
        app = str(self.application_id)
        if m == "GET" and parts == ["users", "@me"]:
            if self.reject_token:
                return self._json({"message": "401: Unauthorized", "code": 0}, status=401)
            return self._json(self.bot_user.payload())
        if m == "GET" and parts == ["oauth2", "applications", "@me"]:
            if self.reject_token:
                return self._json({"message": "401: Unauthorized", "code": 0}, status=401)
            return self._json(
                {
                    "id": app,
                    "name": "microgenre",
                    "description": "",
                    "icon": None,
                    "bot_public": True,
                    "bot_require_code_grant": False,
                    "owner": self.owner.payload(),
                    "verify_key": "0" * 64,
                    "flags": 0,
                }
            )
        if m == "GET" and parts == ["gateway", "bot"]:
            return self._json(
                {
                    "url": self.gateway_url,
                    "shards": 1,
                    "session_start_limit": {
                        "total": 1000,
                        "remaining": 1000,
                        "reset_after": 0,
                        "max_concurrency": 1,
                    },
                }
            )
        if m == "GET" and parts == ["gateway"]:
            return self._json({"url": self.gateway_url})
        if parts[:2] == ["applications", app] and parts[-1] == "commands":
            scope = "global" if len(parts) == 3 else f"guild:{parts[3]}"
            if m == "PUT":
                stored = [
                    {**c, "id": str(snowflake(self._ids)), "application_id": app, "version": "1"}
                    | ({"guild_id": parts[3]} if scope != "global" else {})
                    for c in body
                ]
                self.commands[scope] = stored
                return self._json(stored)
            if m == "GET":
                return self._json(self.commands.get(scope, []))
        if m == "POST" and parts[0] == "interactions" and parts[-1] == "callback":
            return self._interaction_callback(parts[2], body, call.files)
        if parts[0] == "webhooks" and len(parts) >= 3 and parts[1] == app:
            return self._webhook(m, parts[2], parts[3:], body, call.files)
        if parts[0] == "channels" and len(parts) >= 3 and parts[2] == "messages":
            return await self._channel_messages(m, int(parts[1]), parts[3:], call)
        return self._json({"message": "404: Not Found", "code": 0}, status=404)

    def _interaction_callback(
        self, token: str, body: dict[str, Any], files: list[str]
    ) -> web.Response:
        interaction = self.interactions.get(token)
        now = time.monotonic()
        if interaction is None or now - interaction.sent_at > self.ack_deadline_s:
            return self._json({"message": "Unknown interaction", "code": 10062}, status=404)
        if interaction.acked_at is not None:
            return self._json(
                {"message": "Interaction has already been acknowledged.", "code": 40060},
                status=400,
            )
        kind = body.get("type")
        data = body.get("data") or {}
        if kind not in CALLBACKS.get(interaction.type, set()):
            return self._invalid_form("type", "Interaction response type is not valid here.")
        errors = component_errors(data["components"]) if data.get("components") else {}
        if errors:
            return self._invalid_components(errors, prefix="data.")
        interaction.acked_at = now
        if kind in (6, 7):
            return self._update_callback(interaction, kind, data)
        flags = int(data.get("flags") or 0)
        message_id = snowflake(self._ids)
        content = "" if kind == 5 else str(data.get("content") or "")
        message = self.message_payload(
            message_id,
            interaction.channel_id,
            content,
            embeds=data.get("embeds"),
            attachments=files,
            interaction_token=token,
            flags=flags,
            components=data.get("components"),
        )
        message.update(
            _token=token, _original=True, _deferred=kind == 5, _ephemeral=bool(flags & 64)
        )
        self.messages[message_id] = message
        self.originals[token] = message_id
        response: dict[str, Any] = {
            "interaction": {
                "id": str(interaction.id),
                "type": 2,
                "response_message_id": str(message_id),
                "response_message_loading": kind == 5,
                "response_message_ephemeral": bool(flags & 64),
            },
            "resource": {"type": kind},
        }
        if kind == 4:
            response["resource"]["message"] = self._public(message)
        return self._json(response)

    def _update_callback(
        self, interaction: Interaction, kind: int, data: dict[str, Any]
    ) -> web.Response:
        """6 (deferred update) or 7 (update): the click's message is the ``@original``; 7 edits
        it at once."""
        assert interaction.message_id is not None
        self.originals[interaction.token] = interaction.message_id
        message = self.messages[interaction.message_id]
        if kind == 7:
            self._edit(message, data)
        response: dict[str, Any] = {
            "interaction": {
                "id": str(interaction.id),
                "type": interaction.type,
                "response_message_id": str(interaction.message_id),
                "response_message_loading": False,
                "response_message_ephemeral": False,
            },
            "resource": {"type": kind},
        }
        if kind == 7:
            response["resource"]["message"] = self._public(message)
        return self._json(response)

    @staticmethod
    def _edit(message: dict[str, Any], body: dict[str, Any]) -> None:
        for key in ("content", "embeds", "components"):
            if key in body:
                message[key] = body[key] or ("" if key == "content" else [])
        message["edited_timestamp"] = iso_now()

    def _invalid_components(self, errors: dict[str, str], prefix: str = "") -> web.Response:
        body = {
            "message": "Invalid Form Body",
            "code": 50035,
            "errors": nested_errors({prefix + k: v for k, v in errors.items()}),
        }
        return self._json(body, status=400)

    @staticmethod
    def _public(message: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in message.items() if not k.startswith("_")}

    def _webhook(
        self, m: str, token: str, rest: list[str], body: dict[str, Any], files: list[str]
    ) -> web.Response:
        interaction = self.interactions.get(token)
        if interaction is None:
            return self._json({"message": "Unknown Webhook", "code": 10015}, status=404)
        if time.monotonic() - interaction.sent_at > self.token_lifetime_s:
            return self._json({"message": "Invalid Webhook Token", "code": 50027}, status=401)
        errors = component_errors(body["components"]) if body.get("components") else {}
        if errors:
            return self._invalid_components(errors)
        if m == "POST" and not rest:
            message_id = snowflake(self._ids)
            flags = int(body.get("flags") or 0)
            message = self.message_payload(
                message_id,
                interaction.channel_id,
                str(body.get("content") or ""),
                embeds=body.get("embeds"),
                attachments=files,
                interaction_token=token,
                flags=flags,
                components=body.get("components"),
            )
            message.update(_token=token, _ephemeral=bool(flags & 64))
            self.messages[message_id] = message
            return self._json(self._public(message))
        if len(rest) == 2 and rest[0] == "messages":
            key = rest[1]
            target = self.originals.get(token, 0) if key == "@original" else int(key)
            found = self.messages.get(target)
            if found is None:
                return self._json({"message": "Unknown Message", "code": 10008}, status=404)
            if m == "GET":
                return self._json(self._public(found))
            if m == "PATCH":
                self._edit(found, body)
                found["_deferred"] = False
                return self._json(self._public(found))
            if m == "DELETE":
                found["_deleted"] = True
                return self._json(None, status=204)
        return self._json({"message": "404: Not Found", "code": 0}, status=404)

    async def _channel_messages(
        self, m: str, channel_id: int, rest: list[str], call: RecordedCall
    ) -> web.Response:
        body, files = call.json or {}, call.files
        if channel_id in self.deleted_channels:
            return self._json({"message": "Unknown Channel", "code": 10003}, status=404)
        if channel_id in self.no_view_in:
            return self._missing_access()
        errors = component_errors(body["components"]) if body.get("components") else {}
        if errors:
            return self._invalid_components(errors)
        if not rest and m == "POST":
            return self._create_message(channel_id, body, files)
        if not rest or not rest[0].isdigit():
            return self._json({"message": "404: Not Found", "code": 0}, status=404)
        reading = m == "GET"
        if reading and channel_id in self.no_history_in:
            return self._missing_access()
        message_id = int(rest[0])
        stored = self.messages.get(message_id)
        if stored is None or not self._in_channel(stored, channel_id):
            return self._json({"message": "Unknown Message", "code": 10008}, status=404)
        if len(rest) == 1:
            if reading:
                return self._json(self._with_reactions(stored))
            if m == "PATCH":
                self._edit(stored, body)
                return self._json(self._public(stored))
        if len(rest) == 3 and rest[1] == "reactions" and reading:
            return self._reaction_users(message_id, rest[2], call.query)
        if len(rest) == 4 and rest[1] == "reactions" and rest[3] == "@me" and m == "PUT":
            if channel_id in self.no_reactions_in:
                return self._missing_permissions()
            emoji = rest[2]
            self.reactions.setdefault(message_id, {}).setdefault(emoji, set()).add(self.bot_user.id)
            # Discord tells the bot about its own reactions too.
            asyncio.get_running_loop().create_task(
                self.dispatch(
                    "MESSAGE_REACTION_ADD",
                    {
                        "user_id": str(self.bot_user.id),
                        "channel_id": str(channel_id),
                        "message_id": str(message_id),
                        "guild_id": str(self.guild_of(channel_id)),
                        "emoji": {"id": None, "name": emoji},
                        "member": self.bot_user.member(ALL_PERMISSIONS),
                        "message_author_id": str(self.bot_user.id),
                        "burst": False,
                        "burst_colors": [],
                        "type": 0,
                    },
                )
            )
            return self._json(None, status=204)
        if len(rest) == 4 and rest[1] == "reactions" and rest[3] == "@me" and m == "DELETE":
            self.reactions.get(message_id, {}).get(rest[2], set()).discard(self.bot_user.id)
            return self._json(None, status=204)
        return self._json({"message": "404: Not Found", "code": 0}, status=404)

    def _create_message(
        self, channel_id: int, body: dict[str, Any], files: list[str]
    ) -> web.Response:
        """``POST /channels/{id}/messages``, a reply when it has a ``message_reference``: the
        referenced message must be in this channel (else Invalid Form Body, unless
        ``fail_if_not_exists`` is false: then a plain message), and replying needs Read
        Message History."""
        if channel_id in self.no_messages_in:
            return self._missing_permissions()
        reference: dict[str, Any] | None = None
        asked = body.get("message_reference")
        if asked:
            if channel_id in self.no_history_in:
                return self._missing_permissions()
            target = str(asked.get("message_id") or "")
            found = self.messages.get(int(target)) if target.isdigit() else None
            if found is not None and self._in_channel(found, channel_id):
                reference = found
            elif asked.get("fail_if_not_exists", True):
                problem = {"message_reference.message_id": "Unknown message"}
                body_ = {
                    "message": "Invalid Form Body",
                    "code": 50035,
                    "errors": nested_errors(problem, "REPLIES_UNKNOWN_MESSAGE"),
                }
                return self._json(body_, status=400)
        message_id = snowflake(self._ids)
        message = self.message_payload(
            message_id,
            channel_id,
            str(body.get("content") or ""),
            embeds=body.get("embeds"),
            attachments=files,
            components=body.get("components"),
            reference=reference,
        )
        self.messages[message_id] = message
        return self._json(self._public(message))

    def _missing_permissions(self) -> web.Response:
        return self._json({"message": "Missing Permissions", "code": 50013}, status=403)

    def _missing_access(self) -> web.Response:
        return self._json({"message": "Missing Access", "code": 50001}, status=403)

    @staticmethod
    def _in_channel(message: dict[str, Any], channel_id: int) -> bool:
        """Whether ``message`` can be reached under ``channel_id``: not deleted, not ephemeral
        (those exist only for their user), and in that channel."""
        return (
            not message.get("_deleted")
            and not message.get("_ephemeral")
            and int(message["channel_id"]) == channel_id
        )

    def _with_reactions(self, message: dict[str, Any]) -> dict[str, Any]:
        """The message as ``GET`` answers it: with ``reactions`` (absent when it has none)."""
        message_id = int(message["id"])
        normal = self.reactions.get(message_id, {})
        burst = self.burst_reactions.get(message_id, {})
        reactions = []
        for emoji in dict.fromkeys([*normal, *burst]):
            users, boosted = normal.get(emoji, set()), burst.get(emoji, set())
            if not users and not boosted:
                continue  # the last user took it away: Discord drops the reaction
            reactions.append(
                {
                    "emoji": {"id": None, "name": emoji},
                    "count": len(users) + len(boosted),
                    "count_details": {"burst": len(boosted), "normal": len(users)},
                    "me": self.bot_user.id in users,
                    "me_burst": self.bot_user.id in boosted,
                    "burst_colors": [],
                }
            )
        public = self._public(message)
        return {**public, "reactions": reactions} if reactions else public

    def _reaction_users(self, message_id: int, emoji: str, query: dict[str, str]) -> web.Response:
        """``GET .../reactions/{emoji}``: users by id, after ``after``, at most ``limit``."""
        limit_text = query.get("limit", str(REACTION_USERS_DEFAULT_LIMIT))
        if not limit_text.isdigit() or not 1 <= int(limit_text) <= REACTION_USERS_MAX_LIMIT:
            return self._invalid_form(
                "limit", f"int value should be between 1 and {REACTION_USERS_MAX_LIMIT}."
            )
        after_text = query.get("after", "0")
        if not after_text.isdigit():
            return self._invalid_form("after", "Value is not snowflake.")
        kind = query.get("type", "0")
        if kind not in ("0", "1"):
            return self._invalid_form("type", "Value must be one of (0, 1).")
        by_emoji = self.burst_reactions if kind == "1" else self.reactions
        reacted = by_emoji.get(message_id, {}).get(emoji, set())
        ids = sorted(u for u in reacted if u > int(after_text))
        page = ids[: int(limit_text)]
        return self._json([self.users.get(u, FakeUser(u, f"user{u}")).payload() for u in page])

    def _invalid_form(self, name: str, problem: str) -> web.Response:
        body = {
            "message": "Invalid Form Body",
            "code": 50035,
            "errors": {name: {"_errors": [{"code": "BASE_TYPE_INVALID", "message": problem}]}},
        }
        return self._json(body, status=400)
