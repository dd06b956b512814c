"""A callback the sweep test adds to its trials (``--trainer.callbacks+=...``) so that it can interrupt a trial at a
known point without racing it: timing a pause loses on a loaded 2-core machine, where a trial's remaining epochs can
run inside one 20 ms sleep of the test."""

from __future__ import annotations

import os
import time
from pathlib import Path

import lightning as L

HOLD_ENV = "MSA_TEST_HOLD"


class HoldAtSecondEpoch(L.Callback):
    """With ``MSA_TEST_HOLD=PATH`` set, the run stops at the start of its second epoch (its first validation and
    checkpoint written), touches ``PATH.held`` and goes on once ``PATH`` exists (at most 5 minutes).
    Without it, a no-op."""

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        release = os.environ.get(HOLD_ENV)
        if not release or trainer.current_epoch != 1:
            return
        Path(f"{release}.held").touch()
        deadline = time.monotonic() + 300
        while not Path(release).exists() and time.monotonic() < deadline:
            time.sleep(0.02)  # a Ctrl-C meanwhile runs the run's own handler, which saves after the next step
