"""Run `microgenre bot` (the real CLI entry point) against a fake Discord.

Usage: python tests/bot/scripts/run_bot.py API_BASE GATEWAY_URL
The config comes from the environment (DISCORD_TOKEN, MICROGENRE_*). The model worker is the
real supervised WorkerClient with a torch-free scripted sampler (or, with
MICROGENRE_TEST_SAMPLER=default, the configured model). On exit it prints one JSON line
with the exit status and whether torch was imported in this (the bot's) process.
"""

import asyncio
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))


def start_memtrace(path: str) -> None:
    """Diagnostics for the soak (SOAK_MEMTRACE=FILE): every 60 s, one JSON line with the RSS,
    Python's allocated blocks, glibc's malloc figures and the live objects by type."""
    import ctypes
    import gc
    import threading
    import time

    class MallInfo2(ctypes.Structure):
        _fields_ = [
            (name, ctypes.c_size_t)
            for name in (
                "arena",
                "ordblks",
                "smblks",
                "hblks",
                "hblkhd",
                "usmblks",
                "fsmblks",
                "uordblks",
                "fordblks",
                "keepcost",
            )
        ]

    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = MallInfo2

    def rss_kib() -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def loop() -> None:
        while True:
            time.sleep(60)
            counts: dict[str, int] = {}
            for obj in gc.get_objects():
                name = type(obj).__module__ + "." + type(obj).__qualname__
                counts[name] = counts.get(name, 0) + 1
            info = libc.mallinfo2()
            line = {
                "pid": os.getpid(),
                "t": time.time(),
                "rss_kib": rss_kib(),
                "blocks": sys.getallocatedblocks(),
                "malloc": {f: getattr(info, f) for f, _ in MallInfo2._fields_},
                "threads": threading.active_count(),
                "types": counts,
            }
            with open(path, "a") as out:
                out.write(json.dumps(line) + "\n")

    threading.Thread(target=loop, daemon=True).start()


def main() -> int:
    if os.environ.get("SOAK_MEMTRACE"):
        start_memtrace(os.environ["SOAK_MEMTRACE"])
    import yarl
    from discord.gateway import DiscordWebSocket
    from discord.http import Route

    import bot.service
    from bot.cli import entry

    Route.BASE = sys.argv[1]
    DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(sys.argv[2])

    async def create_generator(config, *, known=(), pipeline_options=None):
        from model.filters import Moderator
        from model.worker import WorkerClient
        from model.worker.factory import sampler_spec
        from model.worker.health import HEALTH_FILE
        from tests.bot.scripted_sampler import env_delay_factory

        client = WorkerClient(
            sampler_spec(config),
            config.worker,
            sampler_factory=env_delay_factory,  # MICROGENRE_TEST_SAMPLER_DELAY_S, default 0
            health_file=Path(config.data_dir) / HEALTH_FILE,
        )
        await client.start()
        pid_file = os.environ.get("MICROGENRE_TEST_WORKER_PID_FILE")
        if pid_file:
            await asyncio.to_thread(Path(pid_file).write_text, str(client.pid))
        return bot.service.PipelineGenerator(
            client, known=known, moderator=Moderator(), pipeline_options=pipeline_options
        )

    # MICROGENRE_TEST_SAMPLER=default keeps the configured model (benchmarks/soak.py).
    if os.environ.get("MICROGENRE_TEST_SAMPLER", "scripted") == "scripted":
        bot.service.create_generator = create_generator
    code = entry(["-v", "bot"])
    print(json.dumps({"exit": code, "torch_loaded": "torch" in sys.modules}), flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
