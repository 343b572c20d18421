"""The bot gives the C heap's free pages back to the system (bot/memory.py)."""

import asyncio
import platform

import pytest

from bot.config import BotConfig
from bot.memory import HeapTrimmer, trim_heap


async def test_the_trimmer_trims_every_interval_and_stops_on_close() -> None:
    calls: list[float] = []
    trimmer = HeapTrimmer(interval_s=0.02, trim=lambda: calls.append(0.0) or True)
    trimmer.start()
    await asyncio.sleep(0.15)
    await trimmer.close()
    seen = len(calls)
    assert seen >= 3
    await asyncio.sleep(0.06)
    assert len(calls) == seen  # nothing after close


async def test_a_failing_trim_is_logged_and_the_trimmer_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[int] = []

    def trim() -> bool:
        calls.append(1)
        raise OSError("no heap here")

    trimmer = HeapTrimmer(interval_s=0.02, trim=trim)
    trimmer.start()
    await asyncio.sleep(0.1)
    await trimmer.close()
    assert len(calls) >= 2
    assert "trimming the heap failed" in caplog.text


def test_an_interval_of_zero_starts_nothing() -> None:
    trimmer = HeapTrimmer(interval_s=0.0, trim=lambda: True)
    trimmer.start()
    assert trimmer.running is False


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's")
def test_trim_heap_calls_malloc_trim_on_glibc() -> None:
    assert trim_heap() in (True, False)  # 1 or 0 from malloc_trim: it ran
    assert trim_heap.available is True


def test_the_setting_is_checked() -> None:
    with pytest.raises(ValueError, match="heap_trim_s"):
        BotConfig(heap_trim_s=-1).validate()
    assert BotConfig().heap_trim_s == 60.0
