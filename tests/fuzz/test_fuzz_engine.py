"""The fuzz target's property under Hypothesis (bounded, part of ``make test``), and its seeds.

The long runs use atheris (``make fuzz SECONDS=N``); this gives the same
:func:`fuzz_engine.run_one` structured inputs, so a bounded run still reaches
past the handshake: valid and broken frames, compressed ones, odd close
payloads, split at random.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from fuzz_engine import (
    F_DEFLATE,
    F_HANDSHAKE,
    MAX_MESSAGE,
    Failure,
    Session,
    check,
    deflated,
    frame,
    run_one,
    seeds,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

HERE = Path(__file__).parent

close_payload = st.one_of(
    st.just(b""),
    st.binary(max_size=1),
    st.tuples(
        st.sampled_from([999, 1000, 1001, 1004, 1005, 1006, 1015, 2999, 3000, 4999, 5000, 65535]),
        st.binary(max_size=8),
    ).map(lambda a: a[0].to_bytes(2, "big") + a[1]),
)
frames = st.one_of(
    st.builds(
        frame,
        st.integers(min_value=0, max_value=15),
        st.binary(max_size=MAX_MESSAGE + 20),
        fin=st.booleans(),
        rsv=st.sampled_from([0, 0, 4, 2, 1]),
    ),
    st.builds(lambda p: frame(8, p), close_payload),
    st.builds(
        lambda p, fin: frame(1, deflated(p), fin=fin, rsv=4),
        st.text(max_size=300).map(str.encode),
        st.booleans(),
    ),
    st.binary(min_size=1, max_size=30),  # anything at all
)
inputs = st.builds(
    lambda flags, size, parts: bytes([flags, size]) + b"".join(parts),
    st.integers(min_value=0, max_value=255),
    st.sampled_from([0, 0, 1, 2, 7, 64]),
    st.lists(frames, max_size=8),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=inputs)
def test_only_documented_outcomes(data: bytes) -> None:
    run_one(data)


@settings(max_examples=100, deadline=None)
@given(data=st.binary(max_size=300))
def test_only_documented_outcomes_for_any_bytes(data: bytes) -> None:
    run_one(data)


@pytest.mark.parametrize("name", sorted(seeds()))
def test_seed(name: str) -> None:
    run_one(seeds()[name])


def test_committed_seeds_are_the_generated_ones() -> None:
    # make fuzz reads tests/fuzz/seeds; regenerate them with
    # `python tests/fuzz/fuzz_engine.py --write-seeds tests/fuzz/seeds`.
    committed = {p.name: p.read_bytes() for p in (HERE / "seeds").iterdir()}
    assert committed == seeds()


def test_a_broken_outcome_is_reported() -> None:
    # The checks must be able to fail: a connection left open is caught.
    session = Session(F_HANDSHAKE | F_DEFLATE)
    conn = session.connect(reads=True)
    session.feed(conn, b"GET / HTTP/1.1\r\n")
    with pytest.raises(Failure, match="still holds"):
        session.verify([])
    with pytest.raises(Failure, match="nope"):
        check(False, "nope")
    record = logging.LogRecord("ikisocket", logging.ERROR, __file__, 1, "boom", (), None)
    with pytest.raises(Failure, match="logged at ERROR"):
        Session(0).verify([record])
