"""The soak run (benchmarks/soak.py) started as soon as collection ends, beside the other tests.

The 2-minute soak spends most of its wall time waiting (about 45 s of CPU in 137 s), so the
suite starts it in its own process when collection ends (``pytest_collection_finish`` in
tests/conftest.py) and moves its test last, where it only waits for the result and checks it.
That takes about two minutes off a 2-core CI run. The process gets the same isolated
environment as every test (no developer ``MICROGENRE_*`` variable, no ``DISCORD_TOKEN``) and
its own temporary folder as working directory; it is killed if the session ends first.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import MutableSequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from tests.isolation import isolated_environment

SOAK = Path(__file__).resolve().parents[1] / "benchmarks" / "soak.py"
SOAK_ARGS = ["--minutes", "2", "--sampler", "scripted"]


class _Item(Protocol):
    def get_closest_marker(self, name: str) -> Any: ...


def is_soak(item: _Item) -> bool:
    return item.get_closest_marker("soak") is not None


def soak_last(items: MutableSequence[Any]) -> None:
    """Move the soak tests to the end, in place; the others keep their order."""
    items[:] = [i for i in items if not is_soak(i)] + [i for i in items if is_soak(i)]


@dataclass
class SoakResult:
    returncode: int
    stderr: str
    summary_path: Path


class SoakRun:
    """One soak process: started once, waited for by the soak test, killed at session end."""

    def __init__(self, args: list[str] | None = None) -> None:
        self.args = list(SOAK_ARGS if args is None else args)
        self._folder: Path | None = None
        self._process: subprocess.Popen[str] | None = None

    @property
    def summary_path(self) -> Path:
        assert self._folder is not None
        return self._folder / "soak.json"

    def start(self) -> None:
        if self._process is not None:
            return
        self._folder = Path(tempfile.mkdtemp(prefix="microgenre-soak-"))
        self._process = subprocess.Popen(
            [sys.executable, str(SOAK), *self.args, "--json", str(self.summary_path)],
            cwd=self._folder,
            env=isolated_environment(os.environ),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # its bot and worker go with it if it must be killed
        )

    def result(self, timeout: float) -> SoakResult:
        """Wait for the run (starting it if nothing did) and return what it left."""
        self.start()
        assert self._process is not None
        _, stderr = self._process.communicate(timeout=timeout)
        return SoakResult(int(self._process.returncode or 0), stderr or "", self.summary_path)

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            os.killpg(self._process.pid, signal.SIGKILL)
            self._process.communicate()
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)


# The one run of this pytest session (see tests/conftest.py).
RUN = SoakRun()
