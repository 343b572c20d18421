"""Soak test: the real `microgenre bot` process against the strict fake Discord, for minutes.

About 50 users in 3 servers issue mixed commands (`/genre new` with and without `like`, votes
and toggles, `top`, `favorites`, `check`, `map`) while the worker is killed 3 times, the bot
is restarted once and an admin of the first server retrains its model (`/retrain start`, the
small fake trainer and evaluator of tests/bot/scripts/, so that the bot's whole retraining path
runs without a real LoRA run taking the machine). At the end it checks that

* every interaction was acknowledged in under 3 s and answered;
* the stored votes and favorites equal the reactions on every genre message;
* no genre was issued twice in a server;
* no real genre was delivered (the shipped fingerprint's exact and near matches);
* bot and worker RSS grew less than 10 % from 20 % of the run to the end;
* bot and worker RSS level off: the least-squares slope over the last third of the run is
  under 0.2 MiB/min (bot) and 1.0 MiB/min (worker); judged for runs of 10 minutes or more,
  reported for every run (null in ``checks`` when not judged);
* the retraining run reached a final status (any: succeeded, rejected, failed, cancelled)
  while the soak ran, and the retrained server got genres after it;

prints a JSON summary and exits 1 when a check failed.

    .venv/bin/python benchmarks/soak.py                      # 10 minutes, the default model
    .venv/bin/python benchmarks/soak.py --minutes 60         # what the slope check is for
    .venv/bin/python benchmarks/soak.py --minutes 2 --sampler scripted

Schedule (fractions of the run): bot restart at 0.1, RSS baseline at 0.2, worker kills at 0.3,
0.45 and 0.55, `/retrain start` at 0.6 (retried every 10 s while refused, until 0.8), RSS slope
window from 2/3 to the end. The faults come before the slope window, so that the window shows
the processes serving, not a fresh worker loading its model. Users pause while the bot restarts
(Discord would show them "the application did not respond"; the restart is planned) and the
soak waits for in-flight commands first. The worker's RSS is compared between the worker
serving at the baseline and the one serving at the end (kills replace the process; the bot's
process is the same from the baseline on); its slope is fitted with one intercept per worker
process, so a replacement in the window would not count as growth.

RSS is sampled every ``--rss-every`` seconds (default 30) from /proc: the bot's process and the
worker named in ``<data_dir>/worker_health.json`` (its pid changes after a kill). With the
scripted sampler the fake adapter loads and the run should succeed; with the default model
the worker cannot load the fake trainer's pretend adapter, so the run fails at activation
(its check rejects it) and the server keeps its model: the soak reports the outcome either way.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import faulthandler
import itertools
import json
import os
import random
import re
import signal
import sqlite3
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.fake_discord import FakeDiscord, FakeUser  # noqa: E402
from tests.fake_discord.server import MANAGE_GUILD, MEMBER_PERMISSIONS, Interaction  # noqa: E402

SCRIPTS = ROOT / "tests" / "bot" / "scripts"
LAUNCHER = SCRIPTS / "run_bot.py"
GUILDS = ((1000, 2000), (1001, 2001), (1002, 2002))  # (guild id, its channel)
UP, DOWN, STAR = "👍", "👎", "⭐"
LIKES = ("shoegaze", "sea shanty", "baroque", "techno", "cumbia", "drone", "k-pop")
REAL_NAMES = ("Shoegaze", "Vaporwave", "Drum and Bass", "Hyperpop", "Dream Pop")
ACK_LIMIT_S = 3.0
MAX_RSS_GROWTH = 0.10
# "Levels off": least-squares RSS slope over the last third of the run below these (MiB/min).
# Bot: 0.2 MiB/min is 4 MiB over the last 20 minutes of an hour's run, under 5 MiB an hour on
# its ~200 MiB; the 10-minute run's bot climbed about 1.4 MiB/min (docs/benchmarks.md), which
# fails it. Worker (~900 MiB with the default model): its RSS follows the batches the allocator
# last served; if it moves by +-10 MiB between samples (to be confirmed by the 60-minute run),
# that noise alone gives the slope of 40 samples over 20 minutes an error of about 0.27 MiB/min
# (10 MiB / sqrt(sum of squared minute offsets, ~1330)). 1.0 MiB/min is over 3 such errors,
# 60 MiB an hour (a leak that doubles the worker in about 15 hours), and far below the growth
# of a fresh worker (825-875 -> 900-950 MiB within the 2 minutes between the 10-minute run's
# kills).
SLOPE_LIMITS = {"bot": 0.2, "worker": 1.0}
# Slopes are judged for runs of at least this many seconds (a shorter window is mostly noise).
SLOPE_JUDGED_FROM_S = 600.0
# The retraining admin's server, and the votes a server needs since its last run.
RETRAIN_GUILD = GUILDS[0]
RETRAIN_MIN_VOTES = 10
ADMIN_PERMISSIONS = MEMBER_PERMISSIONS | MANAGE_GUILD
FINAL_RUN_STATES = ("succeeded", "rejected", "failed", "cancelled")
# Seconds to wait for the last commands to be answered at a restart and at the end.
DRAIN_S = 180.0


@dataclass(frozen=True)
class Schedule:
    """When the faults happen, the RSS baseline is taken, the retraining is asked for (and
    given up on while refused) and the RSS slope window starts, in seconds from the start.

    >>> Schedule.for_duration(600)  # doctest: +NORMALIZE_WHITESPACE
    Schedule(bot_restart=60.0, baseline=120.0, worker_kills=(180.0, 270.0, 330.0),
             retrain=360.0, retrain_until=480.0, slope_from=400.0, end=600.0)
    """

    bot_restart: float
    baseline: float
    worker_kills: tuple[float, ...]
    retrain: float
    retrain_until: float
    slope_from: float
    end: float

    @classmethod
    def for_duration(cls, seconds: float) -> Schedule:
        def at(fraction: float) -> float:
            return round(fraction * seconds, 1)

        return cls(
            bot_restart=at(0.1),
            baseline=at(0.2),
            worker_kills=(at(0.3), at(0.45), at(0.55)),
            retrain=at(0.6),
            retrain_until=at(0.8),
            slope_from=round(seconds * 2 / 3, 1),
            end=at(1.0),
        )

    def train_step_s(self) -> float:
        """Seconds per step of the fake trainer (6 steps): about 1 % of the run, so that a long
        run shows several progress edits (5 s apart), between 0.2 and 5 s a step.

        >>> Schedule.for_duration(3600).train_step_s(), Schedule.for_duration(120).train_step_s()
        (5.0, 0.2)
        """
        return round(min(5.0, max(0.2, self.end * 0.01 / 6)), 2)


@dataclass(frozen=True)
class RssSample:
    at: float
    bot_pid: int
    bot_kib: int
    worker_pid: int | None
    worker_kib: int | None


@dataclass
class Faults:
    bot_restart_down_s: float | None = None
    worker_kills: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class RetrainWatch:
    """What the soak saw of the retraining run while it went on (the store has the rest)."""

    requested_at_s: list[float] = field(default_factory=list)  # every /retrain start
    refusals: list[str] = field(default_factory=list)
    run_id: int | None = None
    token: str | None = None  # the interaction whose message shows the progress
    ended_at_s: float | None = None
    # The new model's name in the worker's resident adapters (worker_health.json), first seen.
    worker_loaded_at_s: float | None = None


def rss_kib(pid: int | None) -> int | None:
    """Resident set size of ``pid`` in KiB (None when it is gone)."""
    if pid is None:
        return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


class BotProcess:
    """`microgenre bot` via tests/bot/scripts/run_bot.py, pointed at the fake Discord."""

    def __init__(self, fake: FakeDiscord, workdir: Path, sampler: str, train_step_s: float) -> None:
        self.fake = fake
        self.data_dir = workdir / "data"
        self.db = workdir / "soak.db"
        self.log = workdir / "bot.log"
        # ok-curve: the adapter holds a loss curve, as a real server run's does; without one the
        # bot draws it itself (as for a run that fails while training), importing matplotlib: a
        # one-time step of 30-45 MiB in its RSS that a completed real run does not cause.
        train = [sys.executable, str(SCRIPTS / "fake_train.py"), "ok-curve", str(train_step_s)]
        # New adapter: well-formed 0.9, novel 0.7; the active (shipped) one 0.9, 0.6: it passes.
        evaluate = [sys.executable, str(SCRIPTS / "fake_eval.py"), "0.9", "0.7"]
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("MICROGENRE_")},
            "DISCORD_TOKEN": "soak-token",
            "MICROGENRE_DATABASE_URL": f"sqlite+aiosqlite:///{self.db}",
            "MICROGENRE_PATHS_DATA_DIR": str(self.data_dir),
            "MICROGENRE_TEST_SAMPLER": sampler,
            "MICROGENRE_BOT_RETRAIN_MIN_VOTES": str(RETRAIN_MIN_VOTES),
            "MICROGENRE_BOT_RETRAIN_COOLDOWN_H": "0",
            "MICROGENRE_BOT_TRAIN_COMMAND": env_list(train),
            "MICROGENRE_BOT_EVAL_COMMAND": env_list(evaluate),
        }
        self.proc: asyncio.subprocess.Process | None = None

    async def upgrade_db(self) -> None:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot", "db", "upgrade", env=self.env, cwd=ROOT
        )
        if await proc.wait() != 0:
            raise RuntimeError("microgenre db upgrade failed")

    async def start(self, timeout_s: float = 300.0) -> None:
        self.fake.identified.clear()
        with self.log.open("ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable,
                str(LAUNCHER),
                self.fake.api_base,
                self.fake.gateway_url,
                env=self.env,
                cwd=ROOT,
                stdout=log,
                stderr=log,
            )
        ready = asyncio.create_task(self.fake.identified.wait())
        exited = asyncio.create_task(self.proc.wait())
        done, _ = await asyncio.wait(
            {ready, exited}, timeout=timeout_s, return_when="FIRST_COMPLETED"
        )
        ready.cancel()
        exited.cancel()
        if ready not in done:
            tail = self.log.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"the bot did not connect (exit {self.proc.returncode}):\n{tail}")
        await asyncio.sleep(1.0)  # GUILD_CREATEs handled, on_ready

    async def stop(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(self.proc.wait(), 60)
        except TimeoutError:
            self.proc.kill()
            return await self.proc.wait()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def worker_health(self) -> dict[str, Any]:
        try:
            data = json.loads((self.data_dir / "worker_health.json").read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def worker_pid(self) -> int | None:
        data = self.worker_health()
        pid = data.get("pid")
        return pid if isinstance(pid, int) and data.get("alive") else None

    def worker_adapters(self) -> list[str]:
        """Names of the adapters the serving worker holds (as of its last batch)."""
        adapters = self.worker_health().get("adapters")
        if not isinstance(adapters, list):
            return []
        return [str(a.get("name")) for a in adapters if isinstance(a, dict)]


def env_list(parts: list[str]) -> str:
    """A list setting as a ``MICROGENRE_*`` variable holds it: comma-separated.

    >>> env_list(["/usr/bin/python", "x.py", "ok"])
    '/usr/bin/python,x.py,ok'
    """
    if any("," in part for part in parts):
        raise ValueError(f"a comma in {parts} cannot go through an environment variable")
    return ",".join(parts)


@dataclass
class SoakUser:
    user: FakeUser
    guild_id: int
    channel_id: int


class Traffic:
    """The users: mixed commands and reactions, with the order of every reaction kept."""

    def __init__(self, fake: FakeDiscord, users: int, seed: int) -> None:
        self.fake = fake
        self.rng = random.Random(seed)
        self.users = [
            SoakUser(fake.member(f"user{i}"), *GUILDS[i % len(GUILDS)]) for i in range(users)
        ]
        self.open = asyncio.Event()
        self.open.set()
        self.stopping = False
        self.interactions: list[tuple[str, Interaction]] = []
        self.counts: Counter[str] = Counter()
        self._seq = itertools.count()
        self.added_at: dict[tuple[int, int, str], int] = {}  # (message, user, emoji) -> seq

    # ------------------------------------------------------------------ what users see

    def genre_messages(self, channel_id: int) -> list[dict[str, Any]]:
        return [
            m
            for m in self.fake.messages.values()
            if m.get("_token")
            and not m.get("_original")
            and not m.get("_ephemeral")
            and int(m["channel_id"]) == channel_id
            and str(m.get("content", "")).startswith("🎵")
        ]

    def unanswered(self) -> list[tuple[str, Interaction]]:
        """Interactions with no answer yet: a `new` needs a follow-up (its genres or the
        error) or an ephemeral reply; the others any reply but the "thinking…" placeholder."""
        by_token: dict[str, list[dict[str, Any]]] = {}
        for m in self.fake.messages.values():
            if m.get("_token"):
                by_token.setdefault(m["_token"], []).append(m)

        def answered(kind: str, inter: Interaction) -> bool:
            mine = by_token.get(inter.token, [])
            if kind == "new":
                return any(not m.get("_original") or m.get("_ephemeral") for m in mine)
            return any(not (m.get("_original") and m.get("_deferred")) for m in mine)

        return [(k, i) for k, i in self.interactions if not answered(k, i)]

    # ------------------------------------------------------------------ actions

    async def invoke(self, u: SoakUser, kind: str, options: dict[str, Any]) -> None:
        inter = await self.fake.invoke(
            u.user, "genre", kind, options, guild_id=u.guild_id, channel_id=u.channel_id
        )
        self.interactions.append((kind, inter))
        self.counts[kind] += 1

    async def new(self, u: SoakUser) -> None:
        options: dict[str, Any] = {"count": self.rng.randint(1, 3)}
        if self.rng.random() < 0.5:
            options["like"] = self.rng.choice(LIKES)
        await self.invoke(u, "new", options)

    async def check(self, u: SoakUser) -> None:
        posted = self.genre_messages(u.channel_id)
        name = self.rng.choice(REAL_NAMES)
        if posted and self.rng.random() < 0.6:
            found = re.search(r"\*\*(.+?)\*\*", self.rng.choice(posted)["content"])
            name = found.group(1).replace("\\", "") if found else name
        await self.invoke(u, "check", {"name": name})

    async def toggle(self, u: SoakUser, message_id: int) -> None:
        emoji = self.rng.choice((UP, UP, DOWN, STAR))
        add = u.user.id not in self.fake.reactions.get(message_id, {}).get(emoji, set())
        if add:
            self.added_at[(message_id, u.user.id, emoji)] = next(self._seq)
        self.counts["reaction"] += 1
        await self.fake.react(u.user, message_id, emoji, add=add)

    async def vote(self, u: SoakUser) -> None:
        posted = self.genre_messages(u.channel_id)[-40:]
        if not posted:
            return await self.invoke(u, "top", {})
        message_id = int(self.rng.choice(posted)["id"])
        for _ in range(self.rng.choice((1, 1, 2, 4))):  # sometimes a quick burst of toggles
            await self.toggle(u, message_id)
            await asyncio.sleep(self.rng.uniform(0.0, 0.2))

    async def act(self, u: SoakUser) -> None:
        roll = self.rng.random()
        if roll < 0.22:
            await self.new(u)
        elif roll < 0.67:
            await self.vote(u)
        elif roll < 0.75:
            await self.invoke(u, "top", {"period": self.rng.choice(("day", "week", "all"))})
        elif roll < 0.82:
            await self.invoke(u, "favorites", {})
        elif roll < 0.94:
            await self.check(u)
        else:
            await self.invoke(u, "map", {})

    async def run_user(self, u: SoakUser) -> None:
        await asyncio.sleep(self.rng.uniform(0, 5))
        while not self.stopping:
            await self.open.wait()
            if self.stopping:
                return
            await self.act(u)
            await asyncio.sleep(self.rng.uniform(2.0, 8.0))

    async def drain(self, within: float = DRAIN_S) -> None:
        """Wait until every interaction is answered (or ``within`` passes), then a moment for
        the last reactions to be handled."""
        with contextlib.suppress(TimeoutError):
            await self.fake.wait_for(lambda: not self.unanswered(), within)
        await asyncio.sleep(3.0)

    # ------------------------------------------------------------------ expected state

    def expected_votes(self, message_id: int) -> dict[int, int]:
        """User -> +1/-1 from the reactions shown: one of 👍/👎, or the later of both."""
        shown = self.fake.reactions.get(message_id, {})
        ups, downs = shown.get(UP, set()), shown.get(DOWN, set())
        votes: dict[int, int] = {}
        for user in (ups | downs) - {self.fake.bot_user.id}:
            if user in ups and user in downs:
                up_at = self.added_at.get((message_id, user, UP), -1)
                down_at = self.added_at.get((message_id, user, DOWN), -1)
                votes[user] = 1 if up_at > down_at else -1
            else:
                votes[user] = 1 if user in ups else -1
        return votes

    def expected_favorites(self, message_id: int) -> set[int]:
        stars = self.fake.reactions.get(message_id, {}).get(STAR, set())
        return stars - {self.fake.bot_user.id}


# ---------------------------------------------------------------------- the checks


def stored(db: Path) -> dict[str, Any]:
    """Generations, votes and favorites as the store holds them (read after the bot stopped)."""
    con = sqlite3.connect(db)
    try:
        generations = con.execute(
            "SELECT g.message_id, g.guild_id, n.display_name FROM generations g "
            "JOIN genres n ON n.id = g.genre_id"
        ).fetchall()
        votes = con.execute(
            "SELECT g.message_id, v.user_id, v.value FROM votes v "
            "JOIN generations g ON g.id = v.generation_id"
        ).fetchall()
        favorites = con.execute(
            "SELECT g.message_id, f.user_id FROM favorites f "
            "JOIN generations g ON g.id = f.generation_id"
        ).fetchall()
    finally:
        con.close()
    return {"generations": generations, "votes": votes, "favorites": favorites}


RUN_COLUMNS: tuple[str, ...] = ("status", "phase", "error", "guild_id", "step", "total_steps")
RUN_COLUMNS += ("finished_at", "model_version_id")


def read_run(db: Path, run_id: int) -> dict[str, Any] | None:
    """A training run's row, its model version's name, and the genres its server got after it
    ended (all of them, and those of the new model). Read-only, so it may run beside the bot
    (the store is in WAL mode); blocking: call it in a thread while the bot runs."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10.0)
    try:
        row = con.execute(
            f"SELECT {', '.join('r.' + c for c in RUN_COLUMNS)}, v.name FROM training_runs r "
            "LEFT JOIN model_versions v ON v.id = r.model_version_id WHERE r.id = ?",
            (run_id,),
        ).fetchone()
        if row is None:
            return None
        run = dict(zip([*RUN_COLUMNS, "version"], row, strict=True))

        def delivered(where: str, *values: Any) -> int:
            sql = f"SELECT COUNT(*) FROM generations WHERE message_id IS NOT NULL AND {where}"
            return int(con.execute(sql, values).fetchone()[0])

        finished, version_id = run["finished_at"], run["model_version_id"]
        run["genres_after_run"] = (
            delivered("guild_id = ? AND created_at > ?", run["guild_id"], finished)
            if finished is not None
            else 0
        )
        run["genres_from_new_model"] = (
            delivered("model_version_id = ?", version_id) if version_id is not None else 0
        )
    finally:
        con.close()
    return run


def vote_mismatches(traffic: Traffic, rows: dict[str, Any]) -> list[dict[str, Any]]:
    votes: dict[int, dict[int, int]] = {}
    for message_id, user, value in rows["votes"]:
        votes.setdefault(message_id, {})[user] = value
    favorites: dict[int, set[int]] = {}
    for message_id, user in rows["favorites"]:
        favorites.setdefault(message_id, set()).add(user)
    wrong = []
    for message_id, _, _ in rows["generations"]:
        if message_id is None:
            continue
        want, got = traffic.expected_votes(message_id), votes.get(message_id, {})
        want_fav, got_fav = traffic.expected_favorites(message_id), favorites.get(message_id, set())
        if want != got or want_fav != got_fav:
            wrong.append({"message": message_id, "shown": want, "stored": got})
    return wrong


def duplicates(rows: dict[str, Any]) -> list[tuple[int, str]]:
    from model.filters import genre_key

    seen = Counter((guild, genre_key(name)) for _, guild, name in rows["generations"])
    return [key for key, n in seen.items() if n > 1]


def real_delivered(rows: dict[str, Any]) -> list[str]:
    from model.artifacts import default_adapter, load_fingerprint

    fingerprint = load_fingerprint(default_adapter())
    assert fingerprint is not None, "the shipped adapter has no fingerprint"
    return [n for m, _, n in rows["generations"] if m is not None and fingerprint.match(n)]


def unrecorded_posts(traffic: Traffic, rows: dict[str, Any]) -> list[int]:
    """Genre messages posted in a channel with no generation row (a vote could not count)."""
    recorded = {m for m, _, _ in rows["generations"]}
    posted = [int(m["id"]) for _, ch in GUILDS for m in traffic.genre_messages(ch)]
    return [m for m in posted if m not in recorded]


def slope_mib_per_min(points: list[tuple[float, float, int]]) -> float | None:
    """Least-squares slope of ``(seconds, MiB, pid)`` points in MiB per minute, with one
    intercept per process (a replaced process starts at its own level; only growth within a
    process counts). None with fewer than 3 points or no spread in time within a process.

    >>> slope_mib_per_min([(0, 100.0, 1), (60, 101.0, 1), (120, 102.0, 1)])
    1.0
    >>> slope_mib_per_min([(0, 100.0, 1), (60, 101.0, 1), (120, 900.0, 2), (180, 901.0, 2)])
    1.0
    >>> slope_mib_per_min([(0, 100.0, 1), (60, 101.0, 1)]) is None
    True
    """
    if len(points) < 3:
        return None
    by_pid: dict[int, list[tuple[float, float]]] = {}
    for at, mib, pid in points:
        by_pid.setdefault(pid, []).append((at / 60.0, mib))
    num = den = 0.0
    for group in by_pid.values():
        mean_x = sum(x for x, _ in group) / len(group)
        mean_y = sum(y for _, y in group) / len(group)
        num += sum((x - mean_x) * (y - mean_y) for x, y in group)
        den += sum((x - mean_x) ** 2 for x, _ in group)
    return round(num / den, 4) if den > 0 else None


def mib(kib: int | None) -> float | None:
    return None if kib is None else round(kib / 1024, 1)


def rss_figures(samples: list[RssSample], schedule: Schedule, every_s: float) -> dict[str, Any]:
    """Growth from the baseline to the end, every sample, and the slopes over the last third."""
    base = next((s for s in samples if s.at >= schedule.baseline), samples[-1])
    end = samples[-1]

    def growth(a: int | None, b: int | None) -> float | None:
        return None if not a or b is None else round(b / a - 1.0, 4)

    window = [s for s in samples if s.at >= schedule.slope_from]
    bot_points = [(s.at, s.bot_kib / 1024, s.bot_pid) for s in window]
    worker_points = [
        (s.at, s.worker_kib / 1024, s.worker_pid)
        for s in window
        if s.worker_kib is not None and s.worker_pid is not None
    ]
    window_end = window[-1].at if window else schedule.end
    return {
        "baseline_at_s": round(base.at, 1),
        "end_at_s": round(end.at, 1),
        "bot_kib": [base.bot_kib, end.bot_kib],
        "bot_same_process": base.bot_pid == end.bot_pid,
        "bot_growth": growth(base.bot_kib, end.bot_kib),
        "worker_kib": [base.worker_kib, end.worker_kib],
        "worker_pids": [base.worker_pid, end.worker_pid],
        "worker_growth": growth(base.worker_kib, end.worker_kib),
        "bot_peak_kib": max(s.bot_kib for s in samples),
        "worker_peak_kib": max((s.worker_kib or 0) for s in samples),
        "every_s": every_s,
        "sample_columns": ["at_s", "bot_mib", "worker_mib", "worker_pid"],
        "samples": [
            [round(s.at, 1), mib(s.bot_kib), mib(s.worker_kib), s.worker_pid] for s in samples
        ],
        "slope_window": (
            f"last third of the run: {schedule.slope_from:.0f}-{window_end:.0f} s "
            f"(the last {(window_end - schedule.slope_from) / 60:.1f} min)"
        ),
        "slope_window_s": [schedule.slope_from, round(window_end, 1)],
        "slope_samples": {"bot": len(bot_points), "worker": len(worker_points)},
        "bot_slope_mib_per_min": slope_mib_per_min(bot_points),
        "worker_slope_mib_per_min": slope_mib_per_min(worker_points),
        "worker_pids_in_window": sorted({pid for _, _, pid in worker_points}),
        "slope_limits_mib_per_min": SLOPE_LIMITS,
        "slope_judged": schedule.end >= SLOPE_JUDGED_FROM_S,
    }


def levels_off(rss: dict[str, Any]) -> bool | None:
    """The "rss levels off" check: None (not judged) for a run under 10 minutes."""
    if not rss["slope_judged"]:
        return None
    slopes = (rss["bot_slope_mib_per_min"], rss["worker_slope_mib_per_min"])
    limits = (SLOPE_LIMITS["bot"], SLOPE_LIMITS["worker"])
    return all(s is not None and s < limit for s, limit in zip(slopes, limits, strict=True))


def ack_figures(traffic: Traffic) -> dict[str, Any]:
    latencies = [i.ack_latency for _, i in traffic.interactions]
    acked = sorted(x for x in latencies if x is not None)
    return {
        "interactions": len(latencies),
        "unacknowledged": sum(x is None for x in latencies),
        "late": sum(x >= ACK_LIMIT_S for x in acked),
        "max_s": round(acked[-1], 3) if acked else None,
        "p99_s": round(acked[int(0.99 * (len(acked) - 1))], 3) if acked else None,
        "median_s": round(acked[len(acked) // 2], 3) if acked else None,
        "unanswered": len(traffic.unanswered()),
    }


# ---------------------------------------------------------------------- the run


def take_sample(bot: BotProcess, start: float, samples: list[RssSample]) -> None:
    """RSS of the bot and of the worker serving now (none while the bot restarts)."""
    worker = bot.worker_pid()
    bot_kib = rss_kib(bot.pid)
    if bot_kib is not None:
        samples.append(
            RssSample(time.monotonic() - start, bot.pid, bot_kib, worker, rss_kib(worker))
        )


async def sample_rss(
    bot: BotProcess, start: float, every_s: float, samples: list[RssSample]
) -> None:
    """A sample at 0, every_s, 2 * every_s, ... seconds from ``start`` (no drift)."""
    for k in itertools.count():
        await asyncio.sleep(max(0.0, start + k * every_s - time.monotonic()))
        take_sample(bot, start, samples)


async def retrain(
    fake: FakeDiscord,
    bot: BotProcess,
    traffic: Traffic,
    schedule: Schedule,
    start: float,
    watch: RetrainWatch,
) -> None:
    """The admin of the first server runs `/retrain start` (again every 10 s while refused,
    e.g. for too few votes yet), then the soak follows the run in the store until it ends and
    watches the worker's health file for the new model among its adapters."""
    guild_id, channel_id = RETRAIN_GUILD
    admin = fake.member("admin")

    def now() -> float:
        return time.monotonic() - start

    await asyncio.sleep(max(0.0, schedule.retrain - now()))
    while watch.run_id is None:
        if now() > schedule.retrain_until:
            return
        await traffic.open.wait()
        inter = await fake.invoke(
            admin,
            "retrain",
            "start",
            {},
            permissions=ADMIN_PERMISSIONS,
            guild_id=guild_id,
            channel_id=channel_id,
        )
        traffic.interactions.append(("retrain", inter))
        traffic.counts["retrain"] += 1
        watch.requested_at_s.append(round(now(), 1))

        def answer(inter: Interaction = inter) -> str | None:
            refused = [
                str(m.get("content", ""))
                for m in fake.messages.values()
                if m.get("_token") == inter.token and m.get("_ephemeral")
            ]
            if refused:
                return refused[0]
            original = fake.original(inter) or {}
            shown = str(original.get("content", ""))
            return shown if "#" in shown and not original.get("_deferred") else None

        with contextlib.suppress(TimeoutError):
            await fake.wait_for(answer, 60.0)
        shown = answer() or "no answer within 60 s"
        found = re.search(r"Retraining run #(\d+)", shown)
        if found:
            watch.run_id, watch.token = int(found.group(1)), inter.token
        else:
            watch.refusals.append(shown)
            await asyncio.sleep(10.0)
    version: str | None = None
    while True:
        if watch.ended_at_s is None:
            run = await asyncio.to_thread(read_run, bot.db, watch.run_id)
            if run is not None and run["status"] in FINAL_RUN_STATES:
                watch.ended_at_s = round(now(), 1)
                version = run["version"]
        loaded = version is not None and version in bot.worker_adapters()
        if loaded and watch.worker_loaded_at_s is None:
            watch.worker_loaded_at_s = round(now(), 1)
        if watch.ended_at_s is not None and (version is None or watch.worker_loaded_at_s):
            return
        await asyncio.sleep(1.0)


async def kill_worker(bot: BotProcess, start: float, faults: Faults) -> None:
    """SIGKILL the worker named in the health file; wait (bounded) for its successor."""
    deadline = time.monotonic() + 300.0
    pid = bot.worker_pid()
    while pid is None:  # still restarting from the previous kill
        if time.monotonic() > deadline:
            raise RuntimeError("no live worker in worker_health.json")
        await asyncio.sleep(0.5)
        pid = bot.worker_pid()
    os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()
    while bot.worker_pid() in (None, pid):
        if time.monotonic() > deadline:
            raise RuntimeError(f"worker {pid} was not replaced")
        await asyncio.sleep(0.25)
    faults.worker_kills.append(
        {"at_s": round(killed - start, 1), "back_after_s": round(time.monotonic() - killed, 1)}
    )


async def restart_bot(bot: BotProcess, traffic: Traffic, faults: Faults) -> None:
    traffic.open.clear()
    await traffic.drain(60.0)
    down = time.monotonic()
    await bot.stop()
    await bot.start()
    faults.bot_restart_down_s = round(time.monotonic() - down, 1)
    traffic.open.set()


@dataclass
class Observed:
    """Everything the run saw, for :func:`summarise`."""

    traffic: Traffic
    fake: FakeDiscord
    schedule: Schedule
    faults: Faults
    watch: RetrainWatch
    samples: list[RssSample]
    rss_every_s: float
    sampler: str
    rows: dict[str, Any] = field(default_factory=dict)
    run: dict[str, Any] | None = None
    elapsed: float = 0.0
    exit_code: int | None = None
    log_tail: str = ""


async def soak(
    minutes: float,
    sampler: str,
    users: int,
    seed: int,
    workdir: Path | None = None,
    rss_every_s: float = 30.0,
) -> dict[str, Any]:
    schedule = Schedule.for_duration(minutes * 60.0)
    fake = FakeDiscord(guild_id=GUILDS[0][0], channel_id=GUILDS[0][1])
    for guild_id, channel_id in GUILDS[1:]:
        fake.add_guild(guild_id, channel_id)
    await fake.start()
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        bot = BotProcess(fake, workdir or Path(tmp), sampler, schedule.train_step_s())
        seen = Observed(
            Traffic(fake, users, seed),
            fake,
            schedule,
            Faults(),
            RetrainWatch(),
            [],
            rss_every_s,
            sampler,
        )
        traffic = seen.traffic
        try:
            await bot.upgrade_db()
            await bot.start()
            start = time.monotonic()
            sampler_task = asyncio.create_task(sample_rss(bot, start, rss_every_s, seen.samples))
            retrain_task = asyncio.create_task(
                retrain(fake, bot, traffic, schedule, start, seen.watch)
            )
            tasks = [asyncio.create_task(traffic.run_user(u)) for u in traffic.users]
            await asyncio.sleep(schedule.bot_restart)
            await restart_bot(bot, traffic, seen.faults)
            for at in schedule.worker_kills:
                await asyncio.sleep(max(0.0, at - (time.monotonic() - start)))
                await kill_worker(bot, start, seen.faults)
            await asyncio.sleep(max(0.0, schedule.end - (time.monotonic() - start)))
            sampler_task.cancel()
            if time.monotonic() - start - seen.samples[-1].at > 1.0:
                take_sample(bot, start, seen.samples)  # the end of the slope window
            retrain_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await retrain_task  # (its errors raise here)
            traffic.stopping = True
            traffic.open.set()
            await asyncio.gather(*tasks)
            await traffic.drain()
            seen.elapsed = time.monotonic() - start
            seen.exit_code = await bot.stop()
            seen.rows = stored(bot.db)
            if seen.watch.run_id is not None:
                seen.run = read_run(bot.db, seen.watch.run_id)
            seen.log_tail = bot.log.read_text(errors="replace")[-2000:]
        finally:
            if bot.proc is not None and bot.proc.returncode is None:
                bot.proc.kill()
            await fake.stop()
    return summarise(seen)


def retrain_figures(seen: Observed) -> dict[str, Any]:
    watch, run = seen.watch, seen.run or {}
    edits = (
        sum(1 for c in seen.fake.calls if c.method == "PATCH" and watch.token in c.path)
        if watch.token is not None
        else 0
    )
    return {
        "guild_id": RETRAIN_GUILD[0],
        "requested_at_s": watch.requested_at_s,
        "refusals": watch.refusals,
        "run_id": watch.run_id,
        "status": run.get("status"),
        "error": run.get("error"),
        "ended_at_s": watch.ended_at_s,
        "took_s": (
            round(watch.ended_at_s - watch.requested_at_s[-1], 1)
            if watch.ended_at_s is not None
            else None
        ),
        "steps": [run.get("step"), run.get("total_steps")],
        "progress_edits": edits,
        "version": run.get("version"),
        "worker_loaded_adapter_at_s": watch.worker_loaded_at_s,
        "genres_from_new_model": run.get("genres_from_new_model", 0),
        "genres_in_its_server_after_it": run.get("genres_after_run", 0),
        "train_step_s": seen.schedule.train_step_s(),
    }


def summarise(seen: Observed) -> dict[str, Any]:
    traffic, rows, faults = seen.traffic, seen.rows, seen.faults
    acks = ack_figures(traffic)
    wrong_votes = vote_mismatches(traffic, rows)
    dups = duplicates(rows)
    real = real_delivered(rows)
    unrecorded = unrecorded_posts(traffic, rows)
    rss = rss_figures(seen.samples, seen.schedule, seen.rss_every_s)
    retrained = retrain_figures(seen)
    checks = {
        "acknowledged_under_3s": acks["unacknowledged"] == 0 and acks["late"] == 0,
        "all_answered": acks["unanswered"] == 0,
        "votes_equal_reactions": not wrong_votes and not unrecorded,
        "no_duplicate_in_a_server": not dups,
        "no_real_genre": not real,
        "bot_rss_growth_under_10pct": (rss["bot_growth"] or 0.0) < MAX_RSS_GROWTH,
        "worker_rss_growth_under_10pct": (rss["worker_growth"] or 0.0) < MAX_RSS_GROWTH,
        "rss_levels_off": levels_off(rss),
        "faults_injected": len(faults.worker_kills) == 3 and faults.bot_restart_down_s is not None,
        "retrain_ended": retrained["ended_at_s"] is not None,
        "served_after_retrain": retrained["genres_in_its_server_after_it"] > 0,
        "bot_exit_0": seen.exit_code == 0,
    }
    summary = {
        # A check that is null was not judged (rss_levels_off in a run under 10 minutes).
        "ok": all(ok is not False for ok in checks.values()),
        "checks": checks,
        "sampler": seen.sampler,
        "duration_s": round(seen.elapsed, 1),
        "users": len(traffic.users),
        "servers": len(GUILDS),
        "commands": dict(traffic.counts),
        "ack": acks,
        "genres_delivered": sum(m is not None for m, _, _ in rows["generations"]),
        "votes_stored": len(rows["votes"]),
        "favorites_stored": len(rows["favorites"]),
        "vote_mismatches": wrong_votes[:5],
        "unrecorded_posts": unrecorded[:5],
        "duplicates": dups[:5],
        "real_delivered": real[:5],
        "rss": rss,
        "retrain": retrained,
        "faults": asdict(faults),
        "rest_calls": len(seen.fake.calls),
        "rate_limited_429": dict(seen.fake.rate_limited),
        "schedule": asdict(seen.schedule),
    }
    if not summary["ok"]:
        summary["bot_log_tail"] = seen.log_tail
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the run")
    parser.add_argument(
        "--sampler",
        choices=("default", "scripted"),
        default="default",
        help="default: the configured model (SmolLM2 + shipped adapter); scripted: word lists",
    )
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--rss-every", type=float, default=30.0, help="seconds between RSS samples (default 30)"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the summary here")
    parser.add_argument(
        "--workdir", type=Path, default=None, help="keep the database and bot log here"
    )
    args = parser.parse_args(argv)
    faulthandler.register(signal.SIGUSR1)
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
    if args.rss_every <= 0:
        parser.error("--rss-every must be > 0")
    summary = asyncio.run(
        soak(args.minutes, args.sampler, args.users, args.seed, args.workdir, args.rss_every)
    )
    text = json.dumps(summary, indent=2, ensure_ascii=False, default=str)
    print(text)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n", encoding="utf-8")
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
