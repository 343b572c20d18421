"""The pipeline judges candidates (moderation, fingerprint) in a thread, not on the event loop."""

from __future__ import annotations

import threading

from model.filters import Fingerprint
from model.pipeline import GenrePipeline
from tests.model.test_pipeline import ScriptedBackend


class RecordingModerator:
    """Flags nothing; remembers which threads it ran in."""

    def __init__(self) -> None:
        self.threads: list[threading.Thread] = []

    def flags(self, names: list[str]) -> list[bool]:
        self.threads.append(threading.current_thread())
        return [False] * len(names)


class RecordingFingerprint(Fingerprint):
    def __init__(self) -> None:
        base = Fingerprint.from_names(["jazz", "polka"])
        super().__init__(base._exact, base._near, base.meta, base._words, base._doubled)
        self.threads: set[threading.Thread] = set()

    def match(self, name: str) -> str | None:
        self.threads.add(threading.current_thread())
        return super().match(name)


async def test_moderation_and_novelty_run_off_the_event_loop() -> None:
    backend = ScriptedBackend([f" swamp jazz {i}\n" for i in range(40)])
    moderator = RecordingModerator()
    fingerprint = RecordingFingerprint()
    pipeline = GenrePipeline(backend, fingerprint, moderator, require_genre_word=False)  # type: ignore[arg-type]
    outcome = await pipeline.generate(3)
    assert len(outcome.genres) == 3
    loop_thread = threading.current_thread()
    assert moderator.threads and loop_thread not in moderator.threads
    assert fingerprint.threads and loop_thread not in fingerprint.threads
