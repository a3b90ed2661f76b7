"""Messages that cross from one pane to another, kept apart so no pane imports another."""

from __future__ import annotations

from textual.message import Message


class CheckpointPicked(Message):
    """The user chose a registry version to evaluate; the app opens the Run pane with it.

    `ref` is an artifact reference as the registry pane shows it, e.g.
    ``wandb-registry-model/my-model:production``.
    """

    def __init__(self, ref: str) -> None:
        super().__init__()
        self.ref = ref
