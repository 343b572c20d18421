"""The Discord bot: a ``commands.Bot`` that receives its resources, and :func:`serve_bot`.

:func:`make_bot` builds the bot (an ``AutoShardedBot`` when ``[discord] shard_count`` >= 1);
:func:`serve_bot` installs SIGTERM/SIGINT handlers (discord.py has none) and, on a signal,
finishes or fails the in-flight work. ``microgenre bot`` (:mod:`bot.cli.bot`) wires the store
and the generation worker around them.

Slash commands are synced in ``setup_hook`` to ``[discord] dev_guild_id`` (instant) or globally,
and only when their payload changed since the last sync (its hash is kept in the data folder).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import json
import logging
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.errors import MicrogenreError
from bot.invite import invite_url
from bot.memory import HeapTrimmer
from bot.posting import PostsInFlight
from bot.reconcile import ReservationSweeper
from bot.service import GenreService
from bot.store.engine import SessionMaker

if TYPE_CHECKING:
    from bot.config import Config
    from bot.retrain import RetrainManager

log = logging.getLogger(__name__)

# The one place cogs are registered: each is a module under bot/cogs/ whose ``setup()`` adds
# its cog; ``setup_hook`` loads them by name (so this module imports none of them).
COG_MODULES = (
    "bot.cogs.generation",
    "bot.cogs.voting",
    "bot.cogs.leaderboard",
    "bot.cogs.admin",
    "bot.cogs.daily",
)
SYNC_STATE_FILE = "command_sync.json"
# Past the shutdown grace period, commands still generating are failed: this long for their
# error replies to go out before the bot disconnects.
FAIL_REPLY_GRACE_S = 5.0


class DiscordConnectionError(MicrogenreError):
    """Logging in or connecting to Discord failed."""


def default_intents() -> discord.Intents:
    """Guilds (slash commands, channels) and reactions (votes); no message content."""
    intents = discord.Intents.none()
    intents.guilds = True
    intents.guild_reactions = True
    return intents


def user_message(error: BaseException) -> str | None:
    """The text to show for an error a user can act on, or None for a bug."""
    from model.errors import ModelError

    if isinstance(error, app_commands.CommandInvokeError):
        error = error.original
    if isinstance(error, app_commands.TransformerError):
        return f"I could not understand the value {error.value!r}."
    if isinstance(error, app_commands.CommandOnCooldown):
        return f"Slow down a little: try again in {error.retry_after:.0f} s."
    if isinstance(error, app_commands.NoPrivateMessage):
        return "This command only works inside a server."
    if isinstance(error, app_commands.MissingPermissions | app_commands.CheckFailure):
        return str(error) or "You are not allowed to use this command."
    if isinstance(error, MicrogenreError | ModelError):
        return str(error)
    if isinstance(error, discord.Forbidden):
        return (
            "I am missing a permission in this channel (send messages, embed links, attach "
            "files or add reactions): ask a server manager to check my role."
        )
    return None


class MicrogenreBotMixin:
    """Everything of the bot that does not depend on sharding."""

    config: Config
    sessions: SessionMaker
    service: GenreService
    retrainer: RetrainManager | None
    posts_in_flight: PostsInFlight
    genre_group: app_commands.Group
    tree: app_commands.CommandTree[Any]

    def _setup_resources(
        self,
        config: Config,
        sessions: SessionMaker,
        service: GenreService,
        retrainer: RetrainManager | None,
    ) -> None:
        self.config = config
        self.sessions = sessions
        self.service = service
        self.retrainer = retrainer
        self.posts_in_flight = PostsInFlight()
        # Releases genres reserved by a process that died before posting them (at start, and
        # every few minutes after). The voting cog reconciles reactions at ready and resume.
        self.sweeper = ReservationSweeper(sessions)
        self.heap_trimmer = HeapTrimmer(config.bot.heap_trim_s)
        self.genre_group = app_commands.Group(
            name="genre",
            description="Invent, rate and browse musical micro-genres",
            guild_only=True,
        )
        self.sync_result: str | None = None
        self._work = 0
        self._closing_started = False
        self._idle = asyncio.Event()
        self._idle.set()

    # ------------------------------------------------------------------ start-up

    async def setup_hook(self) -> None:
        bot: Any = self
        if self.retrainer is not None:
            await self.retrainer.recover()
        await self.sweeper.start()
        self.heap_trimmer.start()
        for module in COG_MODULES:
            await bot.load_extension(module)
        bot.tree.add_command(self.genre_group)
        bot.tree.on_error = self.on_app_command_error
        await self.sync_commands()
        # What is loaded by now lives as long as the bot: kept out of the collector's sight, or
        # every full collection walks it and stalls the event loop 0.1-0.5 s (bench_loop.py).
        gc.collect()
        gc.freeze()

    def _sync_state_path(self) -> Path:
        return self.config.data_dir / SYNC_STATE_FILE

    def command_payload(self, guild: discord.abc.Snowflake | None) -> list[dict[str, Any]]:
        tree: app_commands.CommandTree[Any] = self.tree
        return [c.to_dict(tree) for c in tree.get_commands(guild=guild)]

    async def sync_commands(self, *, force: bool = False) -> str:
        """Sync to the dev guild or globally when the command payload changed; returns what
        was done ("synced ..." or "unchanged ...").

        When processes split the shards, the one holding shard 0 syncs for all of them."""
        shard_ids = self.config.discord.shard_ids
        if shard_ids and 0 not in shard_ids and not force:
            self.sync_result = "left to shard 0"
            log.info("slash commands are synced by the process holding shard 0")
            return self.sync_result
        tree: app_commands.CommandTree[Any] = self.tree
        guild_id = self.config.discord.dev_guild_id
        guild = discord.Object(id=guild_id) if guild_id else None
        if guild is not None:
            tree.copy_global_to(guild=guild)
        scope = f"guild:{guild_id}" if guild_id else "global"
        payload = self.command_payload(guild)
        digest = hashlib.sha256(
            json.dumps(payload, sort_keys=True, default=str).encode()
        ).hexdigest()
        application_id = getattr(self, "application_id", None)
        key = f"{application_id}:{scope}"
        path = self._sync_state_path()
        state: dict[str, str] = {}
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            state = {}
        if not force and state.get(key) == digest:
            self.sync_result = f"unchanged ({scope})"
            log.info("slash commands unchanged (%s); not syncing", scope)
            return self.sync_result
        synced = await tree.sync(guild=guild)
        state[key] = digest
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(state, indent=2, sort_keys=True), encoding="utf-8")
        self.sync_result = f"synced {len(synced)} commands ({scope})"
        log.info("%s", self.sync_result)
        return self.sync_result

    # ------------------------------------------------------------------ errors

    async def on_app_command_error(
        self, interaction: discord.Interaction[Any], error: app_commands.AppCommandError
    ) -> None:
        """The one error handler: readable errors become ephemeral replies, bugs are logged."""
        message = user_message(error)
        if message is None:
            command = interaction.command.qualified_name if interaction.command else "?"
            log.error(
                "unexpected error in /%s (guild %s, channel %s, user %s)",
                command,
                interaction.guild_id,
                interaction.channel_id,
                interaction.user.id if interaction.user else None,
                exc_info=error,
            )
            message = "Sorry, something went wrong on my side. It has been logged."
        await send_error(interaction, message)

    async def on_ready(self) -> None:
        user = getattr(self, "user", None)
        log.info("connected as %s (id %s)", user, getattr(user, "id", None))
        if (self.sync_result or "").startswith("synced") and not self.config.discord.dev_guild_id:
            log.info(
                "slash commands are global: Discord can take up to an hour to show them in a "
                "server; set [discord] dev_guild_id to a server id to see them there at once"
            )
        application_id = getattr(self, "application_id", None)
        if not getattr(self, "guilds", None) and application_id:
            log.warning("I am in no server yet; invite me: %s", invite_url(application_id))

    # ------------------------------------------------------------------ shutdown

    @property
    def closing(self) -> bool:
        """Whether the bot is shutting down (background tasks start no new work then)."""
        return self._closing_started

    async def close(self) -> None:
        """Finish or fail in-flight work first (bounded), then disconnect."""
        if not self._closing_started:
            self._closing_started = True
            await self.sweeper.close()
            await self.heap_trimmer.close()
            await self.shutdown_work()
            gc.unfreeze()
        await super().close()  # type: ignore[misc]

    async def shutdown_work(self) -> None:
        """Let in-flight generations finish (bounded by ``shutdown_grace_s``), stop retraining."""
        if self.retrainer is not None:
            await self.retrainer.shutdown()
        if self._work:
            log.info("waiting for %d in-flight commands", self._work)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), self.config.bot.shutdown_grace_s)
        if self._work:
            # Fail their generations now, while discord.py can still deliver the error replies
            # (after its close, each one logged "Session is closed" and its user heard nothing).
            log.warning("shutting down with %d commands still in flight: failing them", self._work)
            await self.service.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), FAIL_REPLY_GRACE_S)
        if self._work:
            log.warning("%d commands did not answer before the shutdown", self._work)

    @contextlib.contextmanager
    def track_work(self) -> Iterator[None]:
        """Count a command as in flight (a shutdown waits for it, up to the grace period)."""
        self._work += 1
        self._idle.clear()
        try:
            yield
        finally:
            self._work -= 1
            if not self._work:
                self._idle.set()


async def send_error(interaction: discord.Interaction[Any], message: str) -> None:
    """Tell the user ``message`` privately, replacing a public "thinking…" placeholder."""
    text = f"⚠️ {message}"
    try:
        if not interaction.response.is_done():
            await interaction.response.send_message(text, ephemeral=True)
            return
        if interaction.extras.get("public_defer"):
            with contextlib.suppress(discord.HTTPException):
                await interaction.delete_original_response()
        await interaction.followup.send(text, ephemeral=True)
    except Exception as exc:  # the error reply must never raise (e.g. while shutting down)
        log.warning("could not deliver an error message to interaction %s: %s", interaction.id, exc)


class MicrogenreBot(MicrogenreBotMixin, commands.Bot):
    def __init__(
        self,
        config: Config,
        sessions: SessionMaker,
        service: GenreService,
        *,
        retrainer: RetrainManager | None = None,
        **options: Any,
    ) -> None:
        options.setdefault("intents", default_intents())
        super().__init__(command_prefix=commands.when_mentioned, help_command=None, **options)
        self._setup_resources(config, sessions, service, retrainer)


class ShardedMicrogenreBot(MicrogenreBotMixin, commands.AutoShardedBot):
    def __init__(
        self,
        config: Config,
        sessions: SessionMaker,
        service: GenreService,
        *,
        retrainer: RetrainManager | None = None,
        **options: Any,
    ) -> None:
        options.setdefault("intents", default_intents())
        options.setdefault("shard_count", config.discord.shard_count)
        # Only these shards (and so only their servers) when several processes split them.
        options.setdefault("shard_ids", list(config.discord.shard_ids) or None)
        super().__init__(command_prefix=commands.when_mentioned, help_command=None, **options)
        self._setup_resources(config, sessions, service, retrainer)


def make_bot(
    config: Config,
    sessions: SessionMaker,
    service: GenreService,
    *,
    retrainer: RetrainManager | None = None,
    **options: Any,
) -> MicrogenreBot | ShardedMicrogenreBot:
    """A plain bot, or an auto-sharded one when ``[discord] shard_count`` >= 1."""
    cls = ShardedMicrogenreBot if config.discord.shard_count >= 1 else MicrogenreBot
    return cls(config, sessions, service, retrainer=retrainer, **options)


async def serve_bot(
    bot: MicrogenreBot | ShardedMicrogenreBot,
    token: str,
    *,
    stop: asyncio.Event | None = None,
    install_signals: bool = True,
) -> None:
    """Run ``bot`` until it stops by itself or ``stop`` is set (SIGTERM/SIGINT set it)."""
    loop = asyncio.get_running_loop()
    stop = stop or asyncio.Event()
    installed: list[signal.Signals] = []
    if install_signals:
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, stop.set)
                installed.append(sig)
            except (NotImplementedError, RuntimeError):  # not the main thread / Windows
                pass
    try:
        async with bot:
            runner = asyncio.create_task(bot.start(token), name="discord-client")
            stopper = asyncio.create_task(stop.wait(), name="stop-signal")
            done, _ = await asyncio.wait({runner, stopper}, return_when=asyncio.FIRST_COMPLETED)
            if stopper in done:
                log.info("stopping: finishing in-flight work")
                await bot.close()
            stopper.cancel()
            try:
                await runner
            except asyncio.CancelledError:
                pass
            except discord.LoginFailure:
                raise DiscordConnectionError(
                    "Discord refused the bot token: check DISCORD_TOKEN"
                ) from None
            except discord.PrivilegedIntentsRequired:
                raise DiscordConnectionError(
                    "Discord refused an intent the bot asked for; enable it in the developer portal"
                ) from None
            except (discord.GatewayNotFound, discord.ConnectionClosed, OSError) as exc:
                raise DiscordConnectionError(f"cannot connect to Discord: {exc}") from None
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
