"""Generated event ids: UUIDv7 (RFC 9562), time-sortable."""

from __future__ import annotations

import os


def uuid7_prefix(ms: int) -> tuple[str, int]:
    """UUIDv7 ids for the millisecond `ms`: a random prefix and a random 47-bit counter start.

    Id n of a batch is prefix + 12 hex digits of (start + n): time-sortable,
    unique within the batch, random across processes (24 + 47 random bits).
    """
    r = int.from_bytes(os.urandom(9), "big")
    rand_a, rand_b_hi, start = (r >> 60) & 0xFFF, (r >> 48) & 0xFFF, r & 0x7FFF_FFFF_FFFF
    return f"{(ms >> 16) & 0xFFFFFFFF:08x}-{ms & 0xFFFF:04x}-7{rand_a:03x}-{0x8 | (rand_b_hi >> 10):x}" \
           f"{rand_b_hi & 0x3FF:03x}-", start
