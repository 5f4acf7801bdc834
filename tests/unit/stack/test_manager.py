"""What `up` suggests when a port is taken: another port config accepts, free at the time."""

from __future__ import annotations

import socket

from livedash.stack.manager import _free_near


def test_the_suggested_port_is_free_and_within_the_range_config_accepts() -> None:
    assert _free_near("127.0.0.1", 9092) in range(19092, 19192)
    high = _free_near("127.0.0.1", 60649)  # 10,000 above would be past 65535: below instead
    assert 50649 <= high < 50749
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        first = port + 10_000 if port + 10_000 <= 65_535 else port - 10_000
        with socket.socket() as also:  # the first candidate taken too: the next free one
            try:
                also.bind(("127.0.0.1", first))
                also.listen()
            except OSError:
                pass  # already in use by something else: still not suggested
            got = _free_near("127.0.0.1", port)
            assert got != first and got != port and 1024 <= got <= 65535
