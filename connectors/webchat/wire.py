"""Server-to-client WebSocket frames written straight to the socket, for the two cases where aiohttp's writer
would cost a syscall or a task each: the sweep's pings, and an ack with the reply that follows it in one write.

Only for a socket without per-message compression (a server's frames are never masked, RFC 6455 5.1): with it
negotiated, frames go through aiohttp's writer as usual.
"""

from __future__ import annotations

import struct

# A PING with no payload (RFC 6455 5.5.2: FIN, opcode 0x9, length 0).
PING_FRAME = b"\x89\x00"


def text_frame(payload: bytes) -> bytes:
    """One unfragmented TEXT frame (FIN, opcode 0x1) carrying ``payload`` (UTF-8), with RFC 6455 5.2's length."""
    size = len(payload)
    if size < 126:
        return bytes((0x81, size)) + payload
    if size < 1 << 16:
        return struct.pack("!BBH", 0x81, 126, size) + payload
    return struct.pack("!BBQ", 0x81, 127, size) + payload
