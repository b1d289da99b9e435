"""Imported by the process that forks index builders (bot/aside.py): the bot's modules and jieba's dictionary."""

from __future__ import annotations

import bot.live  # noqa: F401  (what a builder runs)
from bot.text import new_tokenizer

new_tokenizer()
