"""Soak test: the real `microgenre bot` process against the strict fake Discord, for minutes.

About 50 users in 3 servers issue mixed commands (`/genre new` with and without `like`, votes
and toggles, `top`, `favorites`, `check`, `map`) while the worker is killed 3 times and the bot
is restarted once. At the end it checks that

* every interaction was acknowledged in under 3 s and answered;
* the stored votes and favorites equal the reactions on every genre message;
* no genre was issued twice in a server;
* no real genre was delivered (the shipped fingerprint's exact and near matches);
* bot and worker RSS grew less than 10 % from minute 2 (20 % of the run) to the end;

prints a JSON summary and exits 1 when a check failed.

    .venv/bin/python benchmarks/soak.py                      # 10 minutes, the default model
    .venv/bin/python benchmarks/soak.py --minutes 2 --sampler scripted

Schedule (fractions of the run): bot restart at 0.1, RSS baseline at 0.2, worker kills at 0.3,
0.5 and 0.7. Users pause while the bot restarts (Discord would show them "the application did
not respond"; the restart is planned) and the soak waits for in-flight commands first. The
worker's RSS is compared between the worker serving at the baseline and the one serving at the
end (kills replace the process; the bot's process is the same from the baseline on).
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
from tests.fake_discord.server import Interaction  # noqa: E402

LAUNCHER = ROOT / "tests" / "bot" / "scripts" / "run_bot.py"
GUILDS = ((1000, 2000), (1001, 2001), (1002, 2002))  # (guild id, its channel)
UP, DOWN, STAR = "👍", "👎", "⭐"
LIKES = ("shoegaze", "sea shanty", "baroque", "techno", "cumbia", "drone", "k-pop")
REAL_NAMES = ("Shoegaze", "Vaporwave", "Drum and Bass", "Hyperpop", "Dream Pop")
ACK_LIMIT_S = 3.0
MAX_RSS_GROWTH = 0.10
# Seconds to wait for the last commands to be answered at a restart and at the end.
DRAIN_S = 180.0


@dataclass(frozen=True)
class Schedule:
    """When the faults happen and the RSS baseline is taken, in seconds from the start.

    >>> Schedule.for_duration(600)
    Schedule(bot_restart=60.0, baseline=120.0, worker_kills=(180.0, 300.0, 420.0))
    """

    bot_restart: float
    baseline: float
    worker_kills: tuple[float, ...]

    @classmethod
    def for_duration(cls, seconds: float) -> Schedule:
        return cls(0.1 * seconds, 0.2 * seconds, (0.3 * seconds, 0.5 * seconds, 0.7 * seconds))


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

    def __init__(self, fake: FakeDiscord, workdir: Path, sampler: str) -> None:
        self.fake = fake
        self.data_dir = workdir / "data"
        self.db = workdir / "soak.db"
        self.log = workdir / "bot.log"
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("MICROGENRE_")},
            "DISCORD_TOKEN": "soak-token",
            "MICROGENRE_DATABASE_URL": f"sqlite+aiosqlite:///{self.db}",
            "MICROGENRE_PATHS_DATA_DIR": str(self.data_dir),
            "MICROGENRE_TEST_SAMPLER": sampler,
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

    def worker_pid(self) -> int | None:
        try:
            data = json.loads((self.data_dir / "worker_health.json").read_text())
        except (OSError, ValueError):
            return None
        pid = data.get("pid")
        return pid if isinstance(pid, int) and data.get("alive") else None


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


def rss_growth(samples: list[RssSample], baseline_at: float) -> dict[str, Any]:
    base = next((s for s in samples if s.at >= baseline_at), samples[-1])
    end = samples[-1]

    def growth(a: int | None, b: int | None) -> float | None:
        return None if not a or b is None else round(b / a - 1.0, 4)

    return {
        "baseline_at_s": round(base.at, 1),
        "end_at_s": round(end.at, 1),
        "bot_kib": [base.bot_kib, end.bot_kib],
        "bot_same_process": base.bot_pid == end.bot_pid,
        "bot_growth": growth(base.bot_kib, end.bot_kib),
        "worker_kib": [base.worker_kib, end.worker_kib],
        "worker_pids": [base.worker_pid, end.worker_pid],
        "worker_growth": growth(base.worker_kib, end.worker_kib),
        "curve_s_bot_worker_kib": [
            [round(s.at), s.bot_kib, s.worker_kib] for s in samples[:: max(1, len(samples) // 24)]
        ],
        "bot_peak_kib": max(s.bot_kib for s in samples),
        "worker_peak_kib": max((s.worker_kib or 0) for s in samples),
    }


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


async def sample_rss(bot: BotProcess, start: float, samples: list[RssSample]) -> None:
    while True:
        worker = bot.worker_pid()
        bot_kib = rss_kib(bot.pid)
        if bot_kib is not None:
            samples.append(
                RssSample(time.monotonic() - start, bot.pid, bot_kib, worker, rss_kib(worker))
            )
        await asyncio.sleep(5.0)


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


async def soak(
    minutes: float, sampler: str, users: int, seed: int, workdir: Path | None = None
) -> dict[str, Any]:
    duration = minutes * 60.0
    schedule = Schedule.for_duration(duration)
    fake = FakeDiscord(guild_id=GUILDS[0][0], channel_id=GUILDS[0][1])
    for guild_id, channel_id in GUILDS[1:]:
        fake.add_guild(guild_id, channel_id)
    await fake.start()
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        bot = BotProcess(fake, workdir or Path(tmp), sampler)
        traffic = Traffic(fake, users, seed)
        faults = Faults()
        samples: list[RssSample] = []
        try:
            await bot.upgrade_db()
            await bot.start()
            start = time.monotonic()
            sampler_task = asyncio.create_task(sample_rss(bot, start, samples))
            tasks = [asyncio.create_task(traffic.run_user(u)) for u in traffic.users]
            await asyncio.sleep(schedule.bot_restart)
            await restart_bot(bot, traffic, faults)
            for at in schedule.worker_kills:
                await asyncio.sleep(max(0.0, at - (time.monotonic() - start)))
                await kill_worker(bot, start, faults)
            await asyncio.sleep(max(0.0, duration - (time.monotonic() - start)))
            traffic.stopping = True
            traffic.open.set()
            await asyncio.gather(*tasks)
            await traffic.drain()
            sampler_task.cancel()
            elapsed = time.monotonic() - start
            exit_code = await bot.stop()
            rows = stored(bot.db)
            log_tail = bot.log.read_text(errors="replace")[-2000:]
        finally:
            if bot.proc is not None and bot.proc.returncode is None:
                bot.proc.kill()
            await fake.stop()
    return summarise(
        traffic, rows, samples, schedule, faults, elapsed, exit_code, fake, log_tail, sampler
    )


def summarise(
    traffic: Traffic,
    rows: dict[str, Any],
    samples: list[RssSample],
    schedule: Schedule,
    faults: Faults,
    elapsed: float,
    exit_code: int,
    fake: FakeDiscord,
    log_tail: str,
    sampler: str,
) -> dict[str, Any]:
    acks = ack_figures(traffic)
    wrong_votes = vote_mismatches(traffic, rows)
    dups = duplicates(rows)
    real = real_delivered(rows)
    unrecorded = unrecorded_posts(traffic, rows)
    rss = rss_growth(samples, schedule.baseline)
    checks = {
        "acknowledged_under_3s": acks["unacknowledged"] == 0 and acks["late"] == 0,
        "all_answered": acks["unanswered"] == 0,
        "votes_equal_reactions": not wrong_votes and not unrecorded,
        "no_duplicate_in_a_server": not dups,
        "no_real_genre": not real,
        "bot_rss_growth_under_10pct": (rss["bot_growth"] or 0.0) < MAX_RSS_GROWTH,
        "worker_rss_growth_under_10pct": (rss["worker_growth"] or 0.0) < MAX_RSS_GROWTH,
        "faults_injected": len(faults.worker_kills) == 3 and faults.bot_restart_down_s is not None,
        "bot_exit_0": exit_code == 0,
    }
    summary = {
        "ok": all(checks.values()),
        "checks": checks,
        "sampler": sampler,
        "duration_s": round(elapsed, 1),
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
        "faults": asdict(faults),
        "rest_calls": len(fake.calls),
        "rate_limited_429": dict(fake.rate_limited),
        "schedule": asdict(schedule),
    }
    if not summary["ok"]:
        summary["bot_log_tail"] = log_tail
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
    parser.add_argument("--json", type=Path, default=None, help="also write the summary here")
    parser.add_argument(
        "--workdir", type=Path, default=None, help="keep the database and bot log here"
    )
    args = parser.parse_args(argv)
    faulthandler.register(signal.SIGUSR1)
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
    summary = asyncio.run(soak(args.minutes, args.sampler, args.users, args.seed, args.workdir))
    text = json.dumps(summary, indent=2, ensure_ascii=False, default=str)
    print(text)
    if args.json is not None:
        args.json.write_text(text + "\n", encoding="utf-8")
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
