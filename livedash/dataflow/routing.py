"""Where Bytewax puts a key: the worker index of a keyed step's state, and merge shard names spread evenly.

Bytewax 0.21.1 sends a key to worker `hash % workers`, the hash being Rust's DefaultHasher (SipHash-1-3 with
zero keys) over its StateKey(String): the string's bytes and a 0xFF byte (src/operators.rs, stateful_batch:
BuildHasherDefault<DefaultHasher>; src/timely.rs, PartitionOp). Names picked blindly collide: "0" to "3" all
hash to one of two workers, "m-0" to "m-3" three to one.
"""

from __future__ import annotations

from functools import cache

_MASK = (1 << 64) - 1
SPREAD = 8  # shard i goes to worker i % w for every worker count w dividing this


def _rotl(x: int, b: int) -> int:
    return ((x << b) | (x >> (64 - b))) & _MASK


def siphash13(data: bytes, k0: int = 0, k1: int = 0) -> int:
    """SipHash-1-3 (one compression round, three finalization rounds), as Rust's std DefaultHasher."""
    v0, v1 = k0 ^ 0x736F6D6570736575, k1 ^ 0x646F72616E646F6D
    v2, v3 = k0 ^ 0x6C7967656E657261, k1 ^ 0x7465646279746573

    def sip_round() -> None:
        nonlocal v0, v1, v2, v3
        v0 = (v0 + v1) & _MASK
        v1 = _rotl(v1, 13) ^ v0
        v0 = _rotl(v0, 32)
        v2 = (v2 + v3) & _MASK
        v3 = _rotl(v3, 16) ^ v2
        v0 = (v0 + v3) & _MASK
        v3 = _rotl(v3, 21) ^ v0
        v2 = (v2 + v1) & _MASK
        v1 = _rotl(v1, 17) ^ v2
        v2 = _rotl(v2, 32)

    n = len(data)
    end = n - n % 8
    for i in range(0, end, 8):
        m = int.from_bytes(data[i : i + 8], "little")
        v3 ^= m
        sip_round()
        v0 ^= m
    last = (n & 0xFF) << 56 | int.from_bytes(data[end:], "little")
    v3 ^= last
    sip_round()
    v0 ^= last
    v2 ^= 0xFF
    for _ in range(3):
        sip_round()
    return v0 ^ v1 ^ v2 ^ v3


def worker_of(key: str, workers: int) -> int:
    """The worker index Bytewax gives a state key among `workers`."""
    return siphash13(key.encode() + b"\xff") % workers


@cache
def shard_key(shard: int) -> str:
    """The state key of merge shard `shard`: "m-<shard>-<n>" with the first n that puts it on worker
    shard % w for every w dividing SPREAD, so any multiple of the worker count spreads evenly."""
    n = 0
    while worker_of(f"m-{shard}-{n}", SPREAD) != shard % SPREAD:
        n += 1
    return f"m-{shard}-{n}"
