from __future__ import annotations

import gc

import pytest

from hub_pipelines.core.gc_pause import collector_paused


def test_collector_is_off_inside_a_pause_and_back_on_after_it() -> None:
    assert gc.isenabled()
    with collector_paused():
        assert not gc.isenabled()
        with collector_paused():
            assert not gc.isenabled()
        assert not gc.isenabled(), "an inner pause turned the collector back on early"
    assert gc.isenabled()


def test_collector_is_back_on_when_the_paused_block_raises() -> None:
    with pytest.raises(RuntimeError), collector_paused():
        raise RuntimeError("landing failed")
    assert gc.isenabled()
