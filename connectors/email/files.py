"""Where a mail's parts are kept: the raw .eml and its attachments, by content hash under data_dir."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from connectors.email.parse import ParsedMail
from core.model import Attachment

_NAME_BYTES = 180  # file systems allow 255 bytes per name; room is left for a "12-" prefix and ".part"


def safe_name(name: str) -> str:
    """A file name for an attachment: no path or odd characters, and short enough in bytes for the file
    system (85 Chinese characters already pass 255 bytes), keeping the extension when shortened."""
    cleaned = re.sub(r"[^\w.\- ()\[\]]+", "_", name, flags=re.UNICODE).strip(" .")
    if len(cleaned.encode()) > _NAME_BYTES:
        stem, dot, ext = cleaned.rpartition(".")
        ext = dot + ext if dot and len(ext) <= 10 else ""
        stem = stem if ext else cleaned
        budget = _NAME_BYTES - len(ext.encode())
        cleaned = stem.encode()[:budget].decode("utf-8", "ignore").rstrip(" .") + ext
    return cleaned or "attachment"


def write_files(folder: Path, files: Mapping[str, bytes]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        target = folder / name
        if target.exists() and target.stat().st_size == len(data):
            continue  # content-addressed folder: a redelivery writes nothing new
        tmp = target.with_suffix(target.suffix + ".part")
        tmp.write_bytes(data)
        tmp.replace(target)


@dataclass(frozen=True, slots=True, kw_only=True)
class FilePlan:
    """What to write (``files`` under ``folder``, relative to data_dir) and how the message refers to it."""

    folder: Path
    files: dict[str, bytes]
    attachments: tuple[Attachment, ...]
    meta: dict[str, Any]


def plan_files(
    mail: ParsedMail, raw: bytes, *, inbox: str, max_attachment_bytes: int, max_total_bytes: int
) -> FilePlan:
    """The raw .eml and the attachments within the size limits; the others are listed, not kept."""
    relative = Path("email") / inbox / mail.raw_sha256[:2] / mail.raw_sha256
    files: dict[str, bytes] = {"message.eml": raw}
    attachments: list[Attachment] = []
    skipped: list[dict[str, Any]] = []
    inline: dict[str, str] = {}
    total = 0
    used: set[str] = {"message.eml"}
    for i, part in enumerate(mail.attachments):
        too_big = part.size > max_attachment_bytes
        if too_big or total + part.size > max_total_bytes:
            skipped.append({"name": part.filename, "size": part.size, "reason": "too_large"})
            attachments.append(Attachment(name=part.filename, content_type=part.content_type, size=part.size))
            continue
        total += part.size
        name = safe_name(part.filename)
        if name in used:
            name = f"{i}-{name}"
        used.add(name)
        files[name] = part.data
        media_id = str(relative / name)
        attachments.append(
            Attachment(name=part.filename, content_type=part.content_type, media_id=media_id, size=part.size)
        )
        if part.content_id:
            inline[part.content_id] = media_id
    meta: dict[str, Any] = {"eml": str(relative / "message.eml")}
    if skipped:
        meta["skipped_attachments"] = skipped
    if inline:
        meta["inline"] = inline
    return FilePlan(folder=relative, files=files, attachments=tuple(attachments), meta=meta)
