"""WeChat's message encryption (AES-256-CBC, PKCS#7, AppID suffix) as pure functions over wechatpy's cipher."""

from __future__ import annotations

import base64
import binascii
import functools
import secrets
import struct

from wechatpy.crypto import PrpCrypto

from connectors.wechat.signature import sign


class CryptoError(ValueError):
    """An encrypted push that does not decrypt, or was encrypted for another AppID."""


def aes_key(encoding_aes_key: str) -> bytes:
    """The 32-byte AES key behind the 43-character EncodingAESKey."""
    try:
        key = base64.b64decode(encoding_aes_key + "=", validate=True)
    except binascii.Error:
        raise CryptoError("EncodingAESKey is not base64") from None
    if len(key) != 32:
        raise CryptoError("EncodingAESKey must decode to 32 bytes")
    return key


@functools.lru_cache(maxsize=64)
def _prp(key: bytes) -> PrpCrypto:
    """One cipher per key: wechatpy's holds no per-message state (each call takes a fresh encryptor), and
    building it costs as much as decrypting a short push."""
    return PrpCrypto(key)


def decrypt(encrypted: str, *, key: bytes, app_id: str) -> str:
    """The XML inside an ``Encrypt`` element; raises CryptoError unless it was encrypted for ``app_id``."""
    try:
        raw = base64.b64decode(encrypted, validate=True)
    except ValueError:  # binascii.Error, or characters outside ASCII
        raise CryptoError("Encrypt is not base64") from None
    if not raw or len(raw) % 16:
        raise CryptoError("Encrypt is not a whole number of AES blocks")
    cipher = _prp(key).cipher
    try:
        plain: bytes = cipher.decrypt(raw)
    except ValueError as exc:
        raise CryptoError(f"AES decryption failed: {exc}") from None
    pad = plain[-1]
    if not 1 <= pad <= 32 or plain[-pad:] != bytes([pad]) * pad:
        raise CryptoError("bad PKCS#7 padding")
    content = plain[16:-pad]  # 16 random bytes first
    if len(content) < 4:
        raise CryptoError("encrypted message too short")
    (length,) = struct.unpack(">I", content[:4])
    xml, receiver = content[4 : 4 + length], content[4 + length :]
    if len(xml) != length:
        raise CryptoError("encrypted message length does not match")
    if receiver.decode("utf-8", "replace") != app_id:
        raise CryptoError("message was encrypted for another AppID")
    try:
        return xml.decode("utf-8")
    except UnicodeDecodeError:
        raise CryptoError("decrypted message is not UTF-8") from None


def encrypt(xml: str, *, key: bytes, app_id: str) -> str:
    """Base64 ciphertext of ``xml`` for ``app_id``, as WeChat expects in an ``Encrypt`` element."""
    token: bytes = _prp(key).encrypt(xml, app_id)
    return token.decode("ascii")


def envelope(xml: str, *, token: str, key: bytes, app_id: str, timestamp: str, nonce: str | None = None) -> str:
    """An encrypted passive reply: the ciphertext with its msg_signature, timestamp and nonce."""
    nonce = nonce or str(secrets.randbelow(10**10))
    encrypted = encrypt(xml, key=key, app_id=app_id)
    signature = sign(token, timestamp, nonce, encrypted)
    return (
        f"<xml><Encrypt><![CDATA[{encrypted}]]></Encrypt><MsgSignature><![CDATA[{signature}]]></MsgSignature>"
        f"<TimeStamp>{timestamp}</TimeStamp><Nonce><![CDATA[{nonce}]]></Nonce></xml>"
    )
