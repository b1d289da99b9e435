"""Reply extraction: cut quoted history (QQ, 163/Foxmail/Outlook-CN, Gmail, Outlook, Apple Mail) and signatures."""

from __future__ import annotations

import re

_SEPARATOR = re.compile(
    r"^\s*[-_=]{2,}\s*(原始邮件|邮件原件|原邮件|回复的原邮件|original message|original email message|"
    r"forwarded message|reply message|原始郵件|郵件原件|ursprüngliche nachricht|message d'origine|"
    r"mensaje original|messaggio originale)\s*[-_=]{2,}\s*$",
    re.IGNORECASE,
)
_RULE = re.compile(r"^\s*(_{8,}|-{8,}|\* \* \*)\s*$")
_HEADER_FROM = re.compile(r"^\s*[>*\s]*(from|发件人|寄件者|寄件人|von|de|от|da|van)\s*[:：]", re.IGNORECASE)
_HEADER_OTHER = re.compile(
    r"^\s*[>*\s]*(sent|date|to|cc|subject|发送时间|发件时间|日期|时间|收件人|抄送|主题|主旨|寄件日期|"
    r"gesendet|an|betreff|envoyé|objet|à|отправлено|кому|тема|enviado|asunto|para)\s*[:：]",
    re.IGNORECASE,
)
_ATTRIBUTION = re.compile(
    r"^\s*(on|在|於|于|am|le|el|il|op|em|w dniu|den|el día)\b.{0,300}?"
    r"(wrote|写道|寫道|schrieb|a écrit|escribió|ha scritto|schreef|escreveu|napisał|skrev|написал|написала)"
    r"\s*[:：]?\s*$",
    re.IGNORECASE | re.DOTALL,
)
# "<date> <name> <addr>:" followed by quoted lines (Android, localised clients).
_LOOSE_ATTRIBUTION = re.compile(r"(@|\d{1,4}[./-]\d{1,2}[./-]\d{1,4}|\d{1,2}:\d{2}).*[:：]\s*$", re.DOTALL)
_LOOSE_START = re.compile(r"(@|\d{1,4}[./-]\d{1,2}|\d{1,2}:\d{2})")
_SIGNATURE = re.compile(r"^(-- ?|--|—+|__+)$")
_DEVICE_LINE = re.compile(
    r"^\s*(sent from my \w+|sent from (mail|outlook|yahoo mail|samsung)|发自我的\s*\w+|从我的\s*\w+\s*发送|"
    r"get outlook for \w+)",
    re.IGNORECASE,
)


def _quoted(line: str) -> bool:
    return line.lstrip().startswith(">")


def _next_nonblank(lines: list[str], start: int) -> str | None:
    return next((line for line in lines[start:] if line.strip()), None)


def _header_block_at(lines: list[str], i: int) -> bool:
    """A "From:" line followed within a few lines by Sent:/To:/Subject: (or 发送时间:/收件人:/主题:)."""
    if not _HEADER_FROM.match(lines[i]):
        return False
    window = lines[i + 1 : i + 7]
    return sum(1 for line in window if _HEADER_OTHER.match(line)) >= 1


def _headers_after_rule(lines: list[str], i: int) -> bool:
    """A horizontal rule followed by a block of mail headers (Outlook, Hotmail: From may not come first)."""
    window = [line for line in lines[i + 1 : i + 8] if line.strip()][:5]
    return sum(1 for line in window if _HEADER_FROM.match(line) or _HEADER_OTHER.match(line)) >= 2


def _attribution_at(lines: list[str], i: int) -> int | None:
    """If an "On … wrote:" attribution starts at line i (it may wrap over up to 3 lines), its last line."""
    first = lines[i].strip()
    if not first or _quoted(first):
        return None
    for span in range(1, 4):
        if i + span > len(lines) or not lines[i + span - 1].strip():
            break
        joined = " ".join(line.strip() for line in lines[i : i + span])
        if _ATTRIBUTION.match(joined):
            return i + span - 1
        if joined.endswith((":", "：")) and _LOOSE_START.search(first) and _LOOSE_ATTRIBUTION.search(joined):
            after = _next_nonblank(lines, i + span)
            if after is not None and _quoted(after):
                return i + span - 1
    return None


def quote_start(text: str) -> int | None:
    """The line where quoted history begins, or None if there is none."""
    lines = text.split("\n")
    for i, line in enumerate(lines):
        if _SEPARATOR.match(line):
            return i
        if _RULE.match(line) and _headers_after_rule(lines, i):
            return i
        if _header_block_at(lines, i):
            return i
        if _attribution_at(lines, i) is not None:
            return i
        if _quoted(line) and all(not rest.strip() or _quoted(rest) for rest in lines[i:]):
            return i  # a trailing block of "> " lines
    return None


def extract_reply(text: str) -> str:
    """The new part of a reply: everything above the quoted history. Never empty if the mail was not."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    start = quote_start(text)
    if start is None:
        return text.strip()
    lines = text.split("\n")
    reply = "\n".join(lines[:start]).strip()
    if not reply:
        # Bottom-posting: the attribution and quote come first, the answer below them.
        rest = start
        end = _attribution_at(lines, start)
        rest = end + 1 if end is not None else start
        while rest < len(lines) and (not lines[rest].strip() or _quoted(lines[rest])):
            rest += 1
        reply = "\n".join(lines[rest:]).strip()
    return reply or text.strip()


def strip_signature(text: str) -> str:
    """Drop a "-- " signature block and "Sent from my iPhone" lines at the end."""
    lines = text.rstrip().split("\n")
    for i in range(len(lines) - 1, max(len(lines) - 15, 0) - 1, -1):
        if _SIGNATURE.match(lines[i].rstrip()) and i > 0:
            lines = lines[:i]
            break
    while lines and (not lines[-1].strip() or _DEVICE_LINE.match(lines[-1])):
        lines.pop()
    result = "\n".join(lines).strip()
    return result or text.strip()
