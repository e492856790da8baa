"""The part of a range no booked range covers: what an overlapping landing books."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from hub_pipelines.landing.offsets import OffsetRange, uncovered_parts

spans = st.tuples(st.integers(0, 60), st.integers(0, 30)).map(lambda s: OffsetRange(0, s[0], s[0] + s[1]))


@settings(max_examples=300, deadline=None)
@given(wanted=spans, booked=st.lists(spans, max_size=6))
def test_uncovered_parts_are_exactly_the_offsets_of_the_range_no_booked_range_holds(
    wanted: OffsetRange, booked: list[OffsetRange]
) -> None:
    parts = uncovered_parts(wanted, booked)

    covered = {offset for r in booked for offset in range(r.start, r.end)}
    assert {o for p in parts for o in range(p.start, p.end)} == set(range(wanted.start, wanted.end)) - covered
    assert all(p.size > 0 for p in parts)
    assert all(a.end < b.start for a, b in itertools.pairwise(parts))


def test_other_partitions_never_cover_a_range() -> None:
    assert uncovered_parts(OffsetRange(1, 0, 10), [OffsetRange(0, 0, 10)]) == [OffsetRange(1, 0, 10)]
