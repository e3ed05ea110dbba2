"""The invalidation channel's reply parser (used when hiredis is missing), against hiredis and
against the replies it was given. The channel itself is tested on a real Redis in
``tests/test_store_reliability.py``."""

from __future__ import annotations

from typing import Any

import hiredis
import pytest
from hypothesis import given
from hypothesis import strategies as st

from penchant.profile_store._invalidation import ProtocolError, RespParser

scalars = st.one_of(st.binary(max_size=40), st.integers(min_value=-(2**63), max_value=2**63 - 1), st.none())
replies = st.recursive(scalars, lambda children: st.lists(children, max_size=4), max_leaves=12)


def encode(reply: Any, *, push: bool = False) -> bytes:
    """RESP2; a top-level list as a RESP3 push when ``push``."""
    if reply is None:
        return b"$-1\r\n"
    if isinstance(reply, int):
        return b":%d\r\n" % reply
    if isinstance(reply, bytes):
        return b"$%d\r\n%s\r\n" % (len(reply), reply)
    return b"%s%d\r\n" % (b">" if push else b"*", len(reply)) + b"".join(encode(item) for item in reply)


def read_all(parser: Any, data: bytes, cuts: list[int]) -> list[Any]:
    found = []
    start = 0
    for cut in [*sorted(c % (len(data) + 1) for c in cuts), len(data)]:
        parser.feed(data[start:cut])
        start = cut
        while (reply := parser.gets()) is not False:
            found.append(reply)
    return found


@given(st.lists(replies, min_size=1, max_size=5), st.lists(st.integers(min_value=0), max_size=8), st.booleans())
def test_the_parser_reads_what_hiredis_reads_however_the_bytes_arrive(
    sent: list[Any], cuts: list[int], push: bool
) -> None:
    data = b"".join(encode(reply, push=push) for reply in sent)
    ours = read_all(RespParser(), data, cuts)
    assert ours == read_all(hiredis.Reader(), data, cuts)
    assert ours == sent


def test_the_parser_reads_simple_strings_nulls_and_errors() -> None:
    parser = RespParser()
    parser.feed(b"+OK\r\n_\r\n-ERR unknown command\r\n*3\r\n$9\r\nsubscribe\r\n$1\r\nc\r\n:1\r\n")
    assert parser.gets() == b"OK"
    assert parser.gets() is None  # RESP3's null
    error = parser.gets()
    assert isinstance(error, ProtocolError)
    assert str(error) == "ERR unknown command"
    assert parser.gets() == [b"subscribe", b"c", 1]
    assert parser.gets() is False


@pytest.mark.parametrize(
    "data", [b"?what\r\n", b"*x\r\n", b":1.5\r\n", b"$abc\r\n", b"$ 3\r\n", b":+5\r\n", b"$1_0\r\n", b"*1\r\n" * 17]
)
def test_the_parser_refuses_bytes_that_are_not_resp(data: bytes) -> None:
    parser = RespParser()
    parser.feed(data)
    with pytest.raises(ProtocolError):
        parser.gets()


def test_a_reader_closed_before_a_fork_stays_closed_in_the_child() -> None:
    """A forked child starts a live reader afresh (at its first call), never a closed one."""
    from penchant.profile_store._invalidation import ChannelReader

    def unreachable() -> Any:
        raise ConnectionError("no server in this test")

    closed = ChannelReader("c", unreachable, lambda data: None, lambda: None)
    closed.stop()
    live = ChannelReader("c", unreachable, lambda data: None, lambda: None)
    try:
        for reader in (closed, live):
            reader._forked()  # what os.register_at_fork runs in the child
        assert closed._stop.is_set()
        assert not closed._start_afresh
        assert not live._stop.is_set()
        assert live._start_afresh
    finally:
        live.stop()
        closed.stop()
