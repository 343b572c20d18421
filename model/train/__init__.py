"""Training LoRA adapters: full training on a dataset, and the short runs a server's votes start.

* :mod:`model.train.sft` — :func:`~model.train.sft.train`: seeded, resumable, early-stopping
  supervised fine-tuning on a dataset folder (:mod:`model.dataset`);
* :mod:`model.train.votes` — :func:`~model.train.votes.server_run`: a bounded fine-tune of a
  server's adapter on its 👍/👎 votes (:mod:`model.kto`) plus a replay of real genres.

Both write the same adapter folder (:mod:`model.artifacts`), assembled in a temporary folder and
renamed into place. Importing this package never imports torch.
"""

from model.train._common import TrainResult
from model.train.sft import Checkpoint, TrainConfig, Trainer, TrainLoop, TrainState, train
from model.train.votes import ServerRunConfig, VoteTrainer, server_run

__all__ = [
    "Checkpoint",
    "ServerRunConfig",
    "TrainConfig",
    "TrainLoop",
    "TrainResult",
    "TrainState",
    "Trainer",
    "VoteTrainer",
    "server_run",
    "train",
]
