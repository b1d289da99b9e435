"""Frames the web chat connector writes straight to the socket (connectors/webchat/wire.py), and the ack held
to the end of the loop turn so its reply goes in the same write."""

from __future__ import annotations

from pathlib import Path

from connectors.webchat.wire import PING_FRAME, text_frame
from gateway.intake import BotSetup
from tests.conftest import Gateway, make_config, started


def test_text_frames_carry_rfc_6455_lengths() -> None:
    assert text_frame(b"Hello") == b"\x81\x05Hello"  # RFC 6455 5.7's unmasked "Hello"
    assert text_frame(b"x" * 125)[:2] == b"\x81\x7d"
    assert text_frame(b"x" * 256)[:4] == b"\x81\x7e\x01\x00"  # 5.7: 256 bytes in a 16-bit length
    assert text_frame(b"x" * 65535)[:4] == b"\x81\x7e\xff\xff"
    assert text_frame(b"x" * 65536)[:10] == b"\x81\x7f\x00\x00\x00\x00\x00\x01\x00\x00"  # 5.7: 64 KiB in 64 bits
    assert len(text_frame(b"x" * 65536)) == 65536 + 10
    assert PING_FRAME == b"\x89\x00"


async def _ack_then_reply(gw: Gateway, **connect: object) -> None:
    async with gw.http.ws_connect(gw.ws_url(), **connect) as ws:  # type: ignore[arg-type]
        await ws.send_json({"type": "hello", "token": None, "last_seq": 0})
        assert (await ws.receive_json(timeout=5))["type"] == "welcome"
        for i, question in enumerate(["我想退款", "怎么开发票", "where is my order"]):
            await ws.send_json({"type": "message", "id": f"m{i}", "text": question})
            ack, reply = [await ws.receive_json(timeout=5) for _ in range(2)]
            assert (ack["type"], ack["id"], reply["type"]) == ("ack", f"m{i}", "message")
            assert reply["seq"] == i + 1 and ack["seq"] == i and reply["author"] == "bot"


async def test_an_ack_and_its_reply_arrive_in_order_with_and_without_compression(
    tmp_path: Path, bot_setup: BotSetup
) -> None:
    async with started(make_config(tmp_path), bot_setup) as gw:
        await _ack_then_reply(gw)  # no compression offered: both in one write
        await _ack_then_reply(gw, compress=15)  # permessage-deflate: through aiohttp's writer, one by one
