"""Phone test helpers: a phone inbox in the real app, CTI requests as a PBX sends them, waiting for intake."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from typing import Any
from urllib.parse import urlencode

from core.model import Channel, Direction, Message, Ticket
from core.store import Store
from gateway.app import GATEWAY
from tests.conftest import SHARED, Gateway

CORPUS = SHARED / "corpora" / "phone"
TOKEN = "cti-token-0123456789"
SECRET = "cti-hmac-secret-0123456789"


def phone_inbox(name: str = "tel", **overrides: Any) -> dict[str, Any]:
    inbox: dict[str, Any] = {"name": name, "channel": "phone", "token": TOKEN, "settle_s": 0.3}
    inbox.update(overrides)
    return inbox


def store_of(gw: Gateway) -> Store:
    return gw.server.app[GATEWAY].store


async def settled(gw: Gateway, wait_s: float = 10) -> None:
    """Wait until intake has finished every message (bot decisions, tickets)."""
    tasks = gw.server.app[GATEWAY].tasks
    async with asyncio.timeout(wait_s):
        while len(tasks):  # noqa: ASYNC110 - the tracker has no event to wait on; poll it
            await asyncio.sleep(0.01)


def signed(secret: str, body: bytes, *, timestamp: int | None) -> dict[str, str]:
    """The signature headers a PBX sends: over "<timestamp>." + body, or (the old scheme) the body alone."""
    message = body if timestamp is None else f"{timestamp}.".encode() + body
    headers = {"X-Huiliu-Signature": "sha256=" + hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()}
    if timestamp is not None:
        headers["X-Huiliu-Timestamp"] = str(timestamp)
    return headers


async def cti(
    gw: Gateway,
    inbox: str,
    params: dict[str, Any],
    *,
    form: bool = False,
    token: str | None = TOKEN,
    secret: str | None = None,
    legacy: bool = False,
    at: int | None = None,
) -> tuple[int, Any]:
    """POST one CTI event as JSON or form fields (``user`` lists become ``user[]``), as a PBX would."""
    headers: dict[str, str] = {}
    if form:
        pairs: list[tuple[str, str]] = []
        for key, value in params.items():
            if isinstance(value, list):
                pairs.extend((f"{key}[]", str(v)) for v in value)
            else:
                pairs.append((key, str(value)))
        body = urlencode(pairs).encode()
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    else:
        body = json.dumps(params).encode()
        headers["Content-Type"] = "application/json"
    if secret is not None:
        headers |= signed(secret, body, timestamp=None if legacy else int(time.time()) if at is None else at)
    url = f"{gw.url}/cti/{inbox}"
    if token is not None:
        url += f"?token={token}"
    async with gw.http.post(url, data=body, headers=headers) as resp:
        payload = await resp.json() if resp.content_type == "application/json" else await resp.text()
        return resp.status, payload


async def call_message(gw: Gateway, inbox: str, call_id: str) -> Message | None:
    return await store_of(gw).find_message(
        channel=Channel.PHONE, inbox=inbox, direction=Direction.INBOUND, external_id=call_id
    )


async def tickets_of(gw: Gateway, message: Message) -> list[Ticket]:
    store = store_of(gw)
    conversation = await store.get_conversation(message.conversation_id)
    assert conversation is not None
    if conversation.ticket_id is None:
        return []
    ticket = await store.get_ticket(conversation.ticket_id)
    return [ticket] if ticket else []
