"""Store contract for the service rules: timers, assignment the store decides, ticket filters by rule fields."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import timedelta

from core import events
from core.model import SlaTarget, Ticket, TicketSla, TicketStatus
from core.store import Store, TicketQuery
from core.store.types import Assignment, ticket_timer
from tests.contract.test_store_contract import NOW, draft_ticket, new_conversation, store

__all__ = ["store"]  # the backend-parametrized fixture


async def test_a_due_timer_is_claimed_once_until_its_hold_runs_out(store: Store) -> None:
    await store.set_timer("a", NOW)
    await store.set_timer("b", NOW + timedelta(minutes=5))
    await store.set_timer("gone", NOW)
    await store.set_timer("gone", None)
    first, second = await asyncio.gather(store.claim_due_timers(NOW, hold_s=30), store.claim_due_timers(NOW, hold_s=30))
    claimed = [t.key for t in (*first, *second)]
    assert claimed == ["a"]
    assert (first or second)[0].due_at == NOW
    assert await store.claim_due_timers(NOW + timedelta(seconds=29), hold_s=30) == []
    again = await store.claim_due_timers(NOW + timedelta(seconds=31), hold_s=30)
    assert [t.key for t in again] == ["a"]  # the first claimer died: it comes due again
    await store.set_timer("a", None)  # that claimer acted and removed it
    later = await store.claim_due_timers(NOW + timedelta(minutes=5), hold_s=30)
    assert [t.key for t in later] == ["b"]


async def test_every_ticket_write_keeps_its_timer_at_the_next_sla_check(store: Store) -> None:
    conversation = await new_conversation(store)
    due = NOW + timedelta(hours=2)
    sla = TicketSla(policy="default", first_response_due_at=due, first_response_warn_at=NOW + timedelta(hours=1))
    ticket, _ = await store.create_ticket(
        dataclasses.replace(draft_ticket(conversation), sla=sla), conversation, lambda t, c: []
    )
    claimed = await store.claim_due_timers(NOW + timedelta(hours=1), hold_s=30)
    assert [(t.key, t.due_at) for t in claimed] == [(ticket_timer(ticket.id), NOW + timedelta(hours=1))]
    warned = dataclasses.replace(sla, warned=(SlaTarget.FIRST_RESPONSE,))
    ticket = await store.update_ticket(dataclasses.replace(ticket, sla=warned))
    assert await store.claim_due_timers(NOW + timedelta(hours=1, minutes=59), hold_s=30) == []
    assert [t.due_at for t in await store.claim_due_timers(due, hold_s=30)] == [due]
    await store.update_ticket(dataclasses.replace(ticket, status=TicketStatus.RESOLVED))
    assert await store.claim_due_timers(NOW + timedelta(days=30), hold_s=30) == []  # a resolved ticket has none


async def _ticket(store: Store, n: int, assign: Assignment) -> Ticket:
    conversation = await new_conversation(store, n)
    draft = dataclasses.replace(draft_ticket(conversation), queue=assign.queue)
    ticket, _ = await store.create_ticket(draft, conversation, lambda t, c: [events.ticket_created(t)], assign=assign)
    return ticket


async def test_round_robin_takes_turns_even_when_tickets_are_created_concurrently(store: Store) -> None:
    assign = Assignment(queue="billing", agents=("li", "wang", "zhao"), mode="round_robin")
    tickets = await asyncio.gather(*(_ticket(store, n, assign) for n in range(6)))
    assert sorted(t.assignee or "" for t in tickets) == ["li", "li", "wang", "wang", "zhao", "zhao"]
    for t in tickets:
        stored = await store.get_ticket(t.id)
        assert stored is not None and stored.assignee == t.assignee
    created = [e for e in await store.events_after(0) if e.type == "ticket.created"]
    assert sorted(e.data["ticket"]["assignee"] for e in created) == sorted(t.assignee or "" for t in tickets)


async def test_least_open_gives_the_ticket_to_the_agent_with_fewest_active_tickets(store: Store) -> None:
    assign = Assignment(queue="complaints", agents=("li", "wang"), mode="least_open")
    first = await _ticket(store, 1, assign)
    second = await _ticket(store, 2, assign)
    assert {first.assignee, second.assignee} == {"li", "wang"}
    await store.update_ticket(dataclasses.replace(first, status=TicketStatus.RESOLVED))
    third = await _ticket(store, 3, assign)
    assert third.assignee == first.assignee  # their ticket is resolved: they have none open
    fourth, fifth = await asyncio.gather(_ticket(store, 4, assign), _ticket(store, 5, assign))
    assert {fourth.assignee, fifth.assignee} == {"li", "wang"}


async def test_a_queue_without_agents_leaves_the_ticket_unassigned(store: Store) -> None:
    ticket = await _ticket(store, 1, Assignment(queue="general", agents=(), mode="round_robin"))
    assert ticket.assignee is None
    stored = await store.get_ticket(ticket.id)
    assert stored is not None and stored.assignee is None


async def test_tickets_filter_by_queue_category_assignee_and_sla_sorted_by_due(store: Store) -> None:
    made = []
    for n, (queue, category, assignee, flag) in enumerate(
        [
            ("billing", "invoice", "li", "breached"),
            ("billing", "refund", "wang", "at_risk"),
            ("complaints", "complaint", "li", "at_risk"),
            ("billing", "invoice", None, ""),
        ]
    ):
        conversation = await new_conversation(store, n)
        due = NOW + timedelta(hours=4 - n)  # later tickets are due sooner
        sla = TicketSla(
            policy="default",
            resolution_due_at=due,
            warned=(SlaTarget.RESOLUTION,) if flag else (),
            breached=(SlaTarget.RESOLUTION,) if flag == "breached" else (),
        )
        draft = dataclasses.replace(
            draft_ticket(conversation), queue=queue, category=category, assignee=assignee, sla=sla
        )
        made.append((await store.create_ticket(draft, conversation, lambda t, c: []))[0])

    async def ids(query: TicketQuery) -> list[str]:
        return [t.number for t in (await store.list_tickets(query)).tickets]

    number = [t.number for t in made]
    assert await ids(TicketQuery(queue="billing")) == [number[0], number[1], number[3]]
    assert await ids(TicketQuery(category="invoice")) == [number[0], number[3]]
    assert await ids(TicketQuery(assignee="li")) == [number[0], number[2]]
    assert await ids(TicketQuery(sla="at_risk")) == [number[2], number[1]]  # by due time
    assert await ids(TicketQuery(sla="breached")) == [number[0]]
    page = await store.list_tickets(TicketQuery(sla="at_risk", limit=1))
    assert [t.number for t in page.tickets] == [number[2]]
    rest = await store.list_tickets(TicketQuery(sla="at_risk", limit=1, cursor=page.next_cursor))
    assert [t.number for t in rest.tickets] == [number[1]] and rest.next_cursor is None
    await store.update_ticket(dataclasses.replace(made[1], status=TicketStatus.RESOLVED))
    assert await ids(TicketQuery(sla="at_risk")) == [number[2]]  # a resolved ticket is at risk of nothing


async def test_an_update_moving_a_ticket_to_a_queue_gets_an_assignee_picked_by_the_store(store: Store) -> None:
    conversation = await new_conversation(store)
    ticket, _ = await store.create_ticket(draft_ticket(conversation), conversation, lambda t, c: [])
    moved = dataclasses.replace(ticket, queue="billing")
    change = events.ticket_updated(dataclasses.replace(moved, version=moved.version + 1), {"queue": {"to": "billing"}})
    assign = Assignment(queue="billing", agents=("li", "wang"), mode="round_robin")
    saved = await store.update_ticket(moved, [change], assign=assign)
    assert saved.assignee == "li"
    stored = await store.get_ticket(ticket.id)
    assert stored is not None and stored.assignee == "li" and stored.version == saved.version
    [event] = [e for e in await store.events_after(0) if e.type == "ticket.updated"]
    assert event.data["ticket"]["assignee"] == "li"
    assert event.data["changes"]["assignee"] == {"from": None, "to": "li"}
