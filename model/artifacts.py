"""The files of an adapter folder, the shipped default adapter, the model card and fingerprint.

An adapter folder (written by :mod:`model.train`) holds ``adapter_config.json`` and
``adapter_model.safetensors`` (PEFT), ``model_card.json`` (how it was trained and evaluated),
``known_genres.fingerprint`` (the genres it must not repeat), ``leading_words.json`` (how many
training genres each leading word starts: the pipeline's leading-word prior),
``loss_curve.png`` and, optionally, ``head_tokens.json`` (the token ids a restricted output
head keeps, written by ``microgenre model head-tokens``; see :mod:`model.fastpath`).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from model.filters import Fingerprint, LeadingPrior

log = logging.getLogger(__name__)

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
MODEL_CARD = "model_card.json"
FINGERPRINT = "known_genres.fingerprint"
LEADING_WORDS = "leading_words.json"
LOSS_CURVE = "loss_curve.png"

#: The adapter shipped with the package (used when ``[model] adapter`` is empty).
DEFAULT_ADAPTER_DIR = Path(__file__).resolve().parent / "default_adapter"


def is_adapter(folder: str | Path) -> bool:
    return (Path(folder) / ADAPTER_CONFIG).is_file()


def default_adapter() -> str | None:
    """The shipped adapter folder, or None while none is shipped (the base model serves)."""
    return str(DEFAULT_ADAPTER_DIR) if is_adapter(DEFAULT_ADAPTER_DIR) else None


def read_card(adapter: str | Path) -> dict[str, Any]:
    """The adapter's model card; empty when it has none."""
    path = Path(adapter) / MODEL_CARD
    return json.loads(path.read_text()) if path.is_file() else {}


def write_card(adapter: str | Path, card: dict[str, Any]) -> None:
    """Write the model card (atomically: a reader never sees half a file)."""
    path = Path(adapter) / MODEL_CARD
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(card, indent=2, ensure_ascii=False) + "\n")
    tmp.replace(path)


def load_fingerprint(adapter: str | Path | None) -> Fingerprint | None:
    """The fingerprint the adapter was trained with; None when it has none or it is damaged
    (a warning is logged: the store's names still guard novelty). It carries the adapter's
    leading-word prior as ``leading`` when the folder has a readable one. Blocking."""
    from model.filters import Fingerprint

    if adapter is None:
        return None
    path = Path(adapter) / FINGERPRINT
    if not path.is_file():
        return None
    try:
        fingerprint = Fingerprint.load(path)
    except Exception as exc:  # a damaged file must not stop the bot: the store still guards
        log.warning("cannot read %s: %s", path, exc)
        return None
    fingerprint.leading = load_leading_prior(adapter)
    return fingerprint


def load_leading_prior(adapter: str | Path) -> LeadingPrior | None:
    """The adapter's leading-word prior; None when it has none or it is damaged (a warning is
    logged: the pipeline then falls back to its flat per-call cap). Blocking."""
    from model.filters import LeadingPrior

    path = Path(adapter) / LEADING_WORDS
    if not path.is_file():
        return None
    try:
        return LeadingPrior.load(path)
    except (OSError, ValueError, TypeError) as exc:
        log.warning("cannot read %s: %s", path, exc)
        return None


#: The model card's log of lockbox reads (``microgenre eval --lockbox``), oldest first.
LOCKBOX_READS = "lockbox_reads"


def log_lockbox_read(adapter: str | Path, entry: dict[str, Any]) -> int:
    """Append ``entry`` (when, which command, seeds, ...) to the adapter card's lockbox log
    *before* the lockbox is read; how many reads it now records. Raises ``OSError`` when the
    card cannot be written: an unrecorded read must not happen."""
    card = read_card(adapter)
    reads = [*card.get(LOCKBOX_READS, []), entry]
    write_card(adapter, {**card, LOCKBOX_READS: reads})
    return len(reads)
