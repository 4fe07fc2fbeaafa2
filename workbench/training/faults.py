"""A test hook: `WORKBENCH_FAULT=<point>:<step>` makes a worker kill itself with SIGKILL there.

The fault suite needs kills at exact places of a run (mid-step, mid-checkpoint write, right after an
evaluation, at an epoch boundary) to check that a resume repeats the uninterrupted run's losses; a
kill from outside lands wherever the run happens to be. Points: `step` (after step N's update, before
it is reported), `checkpoint` (inside the write of step N's checkpoint, after its weights are on disk
and before it is renamed into place), `after_eval` (right after the evaluation at step N is recorded).
Unset, as in any real deployment, it does nothing.
"""

from __future__ import annotations

import os
import signal


def reach(point: str, step: int) -> None:
    wanted = os.environ.get("WORKBENCH_FAULT")
    if wanted and wanted == f"{point}:{step}":
        os.kill(os.getpid(), signal.SIGKILL)
