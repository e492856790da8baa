"""The nemesis's order of faults: the kill that opens a run comes back as the fault after next."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from chaos.nemesis import FAULTS, KILL_RUN_WORKER, Nemesis


def nemesis(seed: int) -> Nemesis:
    # Drawing touches neither the deployment nor the instance; only the Stripe server is looked up.
    deployment: Any = SimpleNamespace(services=SimpleNamespace(apis=SimpleNamespace(stripe=None)))
    return Nemesis(deployment=deployment, instance=None, seed=seed)  # type: ignore[arg-type]


@pytest.mark.parametrize("seed", [1, 13, 14, 99])
def test_a_kill_that_did_not_fire_comes_back_after_one_other_fault(seed: int) -> None:
    drawn = nemesis(seed)

    assert drawn.draw() == KILL_RUN_WORKER
    drawn.kill_again_after_next()

    other = drawn.draw()
    assert other != KILL_RUN_WORKER
    assert other in FAULTS
    assert drawn.draw() == KILL_RUN_WORKER
