"""A KB reload builds its index in a child process, and the index that comes back answers as one built here."""

from __future__ import annotations

import asyncio
import pathlib

import pytest

from bot.aside import assemble, build_aside, sliced
from bot.faq import FaqIndex, KbError, KnowledgeBase, read_kb
from bot.live import LiveIndex, build_index
from tests.bot.test_faq import _synthetic_kb

KB = pathlib.Path(__file__).resolve().parents[2] / "kb" / "faq.yaml"
QUERIES = ["密码怎么改啊", "where is my order", "怎麼開發票", "alipay可以用吗", "asdkjh", "物流几天到"]


def _answers(index: FaqIndex, texts: list[str]) -> list[object]:
    return [index.search(t) for t in texts]


def test_an_index_built_in_a_child_process_answers_the_same() -> None:
    kb = read_kb(KB)
    here = build_index(kb, {"business_hours": "9-18"})
    there = build_aside(kb, {"business_hours": "9-18"})
    texts = QUERIES + [q for e in kb.entries for q in e.questions]
    assert _answers(there, texts) == _answers(here, texts)
    assert [e.answer for e in there.entries] == [e.answer for e in here.entries]  # placeholders filled there too


def test_the_fitted_temperature_and_siblings_cross_over() -> None:
    entries = _synthetic_kb(twins=True)
    here = FaqIndex(entries)
    there = build_aside(KnowledgeBase(entries=tuple(entries)), {})
    assert there.temperature == here.temperature
    assert there._siblings == here._siblings and here._siblings
    texts = [e.questions[1] for e in entries]
    assert _answers(there, texts) == _answers(here, texts)


def test_slices_put_back_together_make_the_same_index() -> None:
    here = FaqIndex(_synthetic_kb(twins=False))
    texts = [e.questions[2] for e in here.entries]
    assert _answers(assemble(sliced(here)), texts) == _answers(here, texts)


def test_a_live_index_reloads_through_a_child_process_by_default() -> None:
    live = LiveIndex(KB, read_kb(KB))
    assert live._builder is build_aside


async def test_a_reload_reads_the_file_there_and_a_bad_file_keeps_the_index(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "faq.yaml"
    text = await asyncio.to_thread(KB.read_text, encoding="utf-8")
    await asyncio.to_thread(path.write_text, text, encoding="utf-8")
    live = await asyncio.to_thread(LiveIndex.load, path)
    before = live.current
    await asyncio.to_thread(path.write_text, "faqs: [\n", encoding="utf-8")
    with pytest.raises(KbError, match="invalid YAML"):
        await live.reload()
    assert live.current is before
    await asyncio.to_thread(path.write_text, text.replace("怎么修改密码", "密码怎样才能改"), encoding="utf-8")
    kb = await live.reload()
    assert live.current is not before and live.kb is kb
    assert "密码怎样才能改" in live.current.entry("password_reset").questions  # type: ignore[union-attr]


def test_without_child_processes_a_reload_builds_here_instead_of_failing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where a child cannot be started (no /dev/shm for the pool's semaphores, an interpreter the gateway's user
    may not run again) a KB edit through the admin API failed as 'could not write the knowledge base file'."""
    import bot.aside

    class NoChildren:
        def __init__(self, *args: object, **kwargs: object) -> None:
            raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(bot.aside, "ProcessPoolExecutor", NoChildren)
    monkeypatch.setattr(bot.aside, "_children_work", True)
    kb, index = bot.aside.load_aside(KB, {})
    assert kb == read_kb(KB)
    assert _answers(index, QUERIES) == _answers(build_index(kb, {}), QUERIES)
    assert bot.aside._children_work is False  # said once; later builds go straight to this process
    assert _answers(build_aside(kb, {}), QUERIES) == _answers(index, QUERIES)
