"""Redis store for many gateway instances: Lua scripts give each change and its events one atomic write."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import json
import logging
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

import redis
import redis.asyncio as aioredis
from redis.asyncio.client import PubSub
from redis.commands.core import AsyncScript
from redis.driver_info import DriverInfo
from redis.exceptions import RedisError

from core.bus import BusHandler
from core.codec import dumps, loads
from core.events import message_json
from core.ids import random_hex
from core.model import (
    Admission,
    Channel,
    Checkpoint,
    Contact,
    Conversation,
    Delivery,
    DeliveryStatus,
    Direction,
    DownstreamEvent,
    EventType,
    Identity,
    Message,
    QuarantinedItem,
    Ticket,
    TicketStatus,
)
from core.store.contacts import merged_contact
from core.store.cursor import decode_cursor, encode_cursor
from core.store.redis.audit import RedisAuditLog
from core.store.redis.pool import FairConnectionPool
from core.store.types import (
    AdmissionRefused,
    Assignment,
    DeadLetter,
    DueTimer,
    FirstBuild,
    Frame,
    Gauges,
    Hits,
    LogLine,
    NotFound,
    Outgoing,
    StoredFrame,
    StoreError,
    StoreUnavailable,
    TicketEvents,
    TicketLine,
    TicketLineStored,
    TicketPage,
    TicketQuery,
    VersionConflict,
    fill_assignee,
    opened_conversation,
)

log = logging.getLogger(__name__)


def key_tag(prefix: str) -> str:
    """Every key of one deployment carries one Cluster hash tag.

    Each change writes its events into the one ordered outbox in the same script, so all keys are used
    together; a hash tag puts them on one slot, which is what Cluster requires of a multi-key script.
    """
    return prefix if "{" in prefix else "{" + prefix.rstrip(":") + "}:"


# Shared by every writing script: events go to the stream with ids "<seq>-0", once per idempotency key.
# ARGV[1] is the key tag, ARGV[2] the stream's MAXLEN, ARGV[3] the idempotency keys' TTL (0: none).
_PRELUDE = """
local P = ARGV[1]
local function append_events(start)
  local n = tonumber(ARGV[start])
  local maxlen, ttl = ARGV[2], tonumber(ARGV[3])
  for i = 0, n - 1 do
    local base = start + 1 + i * 3
    local fresh
    if ttl > 0 then
      fresh = redis.call('SET', P .. 'evkey:' .. ARGV[base], '1', 'NX', 'EX', ttl)
    else
      fresh = redis.call('SET', P .. 'evkey:' .. ARGV[base], '1', 'NX')
    end
    if fresh then
      local seq = redis.call('INCR', P .. 'evseq')
      redis.call('XADD', P .. 'events', 'MAXLEN', '~', maxlen, seq .. '-0',
        'type', ARGV[base + 1], 'event', '{"v":1,"id":' .. seq .. ARGV[base + 2])
    end
  end
end
"""

# ARGV: 4 id, 5 conversation, 6 unique key or '', 7 left for intake to handle 1/0, 8 episode, 9 ticket id, 10 data,
# 11 answers, 12 conversation to save or '', 13 its expected version, 14 its new version, 15 its data,
# 16 outbox due or '', 17 what it answers (for the outbox), 18 delivery ('' none yet), 19 its error,
# 20 n checkpoints to set with a new message, then (key, value, TTL in ms or '') for each, then the events, then
# optionally a frame's address and body to append with a new message
_ADD_MESSAGE = (
    _PRELUDE
    + """
local id, ext, answers, saving = ARGV[4], ARGV[6], ARGV[11], ARGV[12]
local function mark_answered()
  if answers ~= '' and redis.call('EXISTS', P .. 'msg:' .. answers) == 1 then
    redis.call('HSET', P .. 'msg:' .. answers, 'handled', '1')
    redis.call('ZREM', P .. 'unhandled', answers)
  end
end
if ext ~= '' then
  local earlier = redis.call('GET', P .. 'msgext:' .. ext)
  if earlier then
    mark_answered()
    local f = redis.call('HMGET', P .. 'msg:' .. earlier, 'data', 'ticket_id', 'delivery', 'delivery_error')
    return {0, f[1], f[2], f[3], f[4]}
  end
end
if saving ~= '' and redis.call('HGET', P .. 'conv:' .. saving, 'version') ~= ARGV[13] then return {2} end
mark_answered()
if ext ~= '' then redis.call('SET', P .. 'msgext:' .. ext, id) end
redis.call('HSET', P .. 'msg:' .. id, 'data', ARGV[10], 'conv', ARGV[5], 'episode', ARGV[8],
  'ticket_id', ARGV[9], 'handled', ARGV[7] == '1' and '0' or '1', 'delivery', ARGV[18], 'delivery_error', ARGV[19])
redis.call('RPUSH', P .. 'conv-msgs:' .. ARGV[5], id)
if ARGV[7] == '1' then
  redis.call('ZADD', P .. 'unhandled', redis.call('INCR', P .. 'msgseq'), id)
end
if saving ~= '' then
  redis.call('HSET', P .. 'conv:' .. saving, 'version', ARGV[14], 'data', ARGV[15])
end
if ARGV[16] ~= '' then
  redis.call('ZADD', P .. 'outbox', ARGV[16], id)
  redis.call('HSET', P .. 'outbox-for', id, ARGV[17])
end
local n = tonumber(ARGV[20])
for i = 0, n - 1 do
  local at = 21 + i * 3
  if ARGV[at + 2] == '' then
    redis.call('SET', P .. 'checkpoint:' .. ARGV[at], ARGV[at + 1])
  else
    redis.call('SET', P .. 'checkpoint:' .. ARGV[at], ARGV[at + 1], 'PX', ARGV[at + 2])
  end
end
append_events(21 + 3 * n)
local after = 22 + 3 * n + 3 * tonumber(ARGV[21 + 3 * n])
if ARGV[after] then  -- a frame to append with the new message (add_framed_message): its number comes back
  return {1, redis.call('RPUSH', P .. 'frames:' .. ARGV[after], ARGV[after + 1])}
end
return {1}
"""
)

# ARGV: 4 id, 5 expected version, 6 new version, 7 data, 8.. events
_SAVE_CONVERSATION = (
    _PRELUDE
    + """
local key = P .. 'conv:' .. ARGV[4]
local v = redis.call('HGET', key, 'version')
if not v or v ~= ARGV[5] then return 0 end
redis.call('HSET', key, 'version', ARGV[6], 'data', ARGV[7])
append_events(8)
return 1
"""
)

# Commit a contact (and maybe a new conversation) computed in Python, if what Python read is unchanged.
# ARGV: 2 contact id, 3 expected contact data ('' = none), 4 new contact data ('' = unchanged),
# 5 conversation address field ('' = no conversation), 6 conversation id, 7 conversation data,
# 8 n checks, then (identity, expected owner or '') pairs, then n links, then identities.
_COMMIT_CONTACT = """
local P = ARGV[1]
local cid, addr = ARGV[2], ARGV[5]
if addr ~= '' then
  local found = redis.call('HGET', P .. 'conv-by-addr', addr)
  if found then return {'exists', found} end
end
if (redis.call('GET', P .. 'contact:' .. cid) or '') ~= ARGV[3] then return {'retry'} end
local n = tonumber(ARGV[8])
for i = 0, n - 1 do
  if (redis.call('GET', P .. 'ident:' .. ARGV[9 + 2 * i]) or '') ~= ARGV[10 + 2 * i] then return {'retry'} end
end
if ARGV[4] ~= '' then redis.call('SET', P .. 'contact:' .. cid, ARGV[4]) end
local at = 9 + 2 * n
for i = 1, tonumber(ARGV[at]) do
  redis.call('SET', P .. 'ident:' .. ARGV[at + i], cid)
end
if addr ~= '' then
  redis.call('HSET', P .. 'conv:' .. ARGV[6], 'version', '1', 'data', ARGV[7])
  redis.call('HSET', P .. 'conv-by-addr', addr, ARGV[6])
  redis.call('RPUSH', P .. 'conv-of:' .. cid, ARGV[6])
end
return {'ok'}
"""

# Commit a merge computed in Python if both contacts, every conversation and every ticket are as read.
# ARGV: 4 source id, 5 its expected data, 6 its new data (the pointer), 7 target id, 8 its expected data,
# 9 its new data, 10 n identities, identities..., n conversations, (id, expected version, data)...,
# n tickets, (id, expected version, data)..., events
_MERGE_CONTACTS = (
    _PRELUDE
    + """
local src, dst = ARGV[4], ARGV[7]
if (redis.call('GET', P .. 'contact:' .. src) or '') ~= ARGV[5] then return 0 end
if (redis.call('GET', P .. 'contact:' .. dst) or '') ~= ARGV[8] then return 0 end
local at = 10
local n = tonumber(ARGV[at])
local idents = {}
for i = 1, n do idents[i] = ARGV[at + i] end
at = at + n + 1
local nc = tonumber(ARGV[at])
for i = 0, nc - 1 do
  if redis.call('HGET', P .. 'conv:' .. ARGV[at + 1 + 3 * i], 'version') ~= ARGV[at + 2 + 3 * i] then return 0 end
end
local convs_at = at
at = at + 3 * nc + 1
local nt = tonumber(ARGV[at])
for i = 0, nt - 1 do
  if redis.call('HGET', P .. 'ticket:' .. ARGV[at + 1 + 3 * i], 'version') ~= ARGV[at + 2 + 3 * i] then return 0 end
end
if #redis.call('LRANGE', P .. 'conv-of:' .. src, 0, -1) ~= nc then return 0 end
if redis.call('ZCARD', P .. 'tix-of:' .. src) ~= nt then return 0 end
for _, ident in ipairs(idents) do redis.call('SET', P .. 'ident:' .. ident, dst) end
for i = 0, nc - 1 do
  local id = ARGV[convs_at + 1 + 3 * i]
  redis.call('HSET', P .. 'conv:' .. id, 'version', tonumber(ARGV[convs_at + 2 + 3 * i]) + 1,
    'data', ARGV[convs_at + 3 + 3 * i])
  redis.call('RPUSH', P .. 'conv-of:' .. dst, id)
end
redis.call('DEL', P .. 'conv-of:' .. src)
for i = 0, nt - 1 do
  local id = ARGV[at + 1 + 3 * i]
  redis.call('HSET', P .. 'ticket:' .. id, 'version', tonumber(ARGV[at + 2 + 3 * i]) + 1,
    'data', ARGV[at + 3 + 3 * i])
end
redis.call('ZUNIONSTORE', P .. 'tix-of:' .. dst, 2, P .. 'tix-of:' .. dst, P .. 'tix-of:' .. src, 'AGGREGATE', 'MIN')
redis.call('DEL', P .. 'tix-of:' .. src)
redis.call('SET', P .. 'contact:' .. src, ARGV[6])
redis.call('SET', P .. 'contact:' .. dst, ARGV[9])
append_events(at + 3 * nt + 1)
return 1
"""
)

# ARGV: 1 key tag, 2 address field, then optionally 3 a claim to take first (as _LEASE does), 4 its holder, 5 its
# TTL in ms. Returns {0} when the claim is another holder's (nothing read or written), else {1, data or nil}.
_FIND_CONVERSATION = """
if ARGV[3] then
  local key = ARGV[1] .. 'claim:' .. ARGV[3]
  local holder = redis.call('GET', key)
  if holder and holder ~= ARGV[4] then return {0} end
  redis.call('SET', key, ARGV[4], 'PX', ARGV[5])
end
local id = redis.call('HGET', ARGV[1] .. 'conv-by-addr', ARGV[2])
if not id then return {1} end
return {1, redis.call('HGET', ARGV[1] .. 'conv:' .. id, 'data')}
"""

_TICKET_INDEX = """
local function index(member, status, channel, add)
  for _, k in ipairs({P .. 'tix', P .. 'tix:status:' .. status, P .. 'tix:channel:' .. channel}) do
    if add then redis.call('ZADD', k, 0, member) else redis.call('ZREM', k, member) end
  end
end
"""

_TICKET_LOAD = """
local function replace_all(s, old, new)
  local out, i = {}, 1
  while true do
    local a, b = string.find(s, old, i, true)
    if not a then break end
    out[#out + 1] = string.sub(s, i, a - 1)
    out[#out + 1] = new
    i = b + 1
  end
  out[#out + 1] = string.sub(s, i)
  return table.concat(out)
end
-- the active tickets of a queue per assignee (least_open counts them)
local function load(queue, assignee, id, add)
  if queue == '' or assignee == '' then return end
  local k = P .. 'load:' .. queue .. ':' .. assignee
  if add then redis.call('SADD', k, id) else redis.call('SREM', k, id) end
end
local function set_timer(key, due)
  if due == '' then redis.call('ZREM', P .. 'timers', key) else redis.call('ZADD', P .. 'timers', due, key) end
end
-- What the store decides (an assignee, a ticket number) stands as a placeholder in the record's JSON
-- (ARGV[data_at]) and in the events that begin at ARGV[events_at]: written in place here.
local function fill(placeholder, value, data_at, events_at)
  ARGV[data_at] = replace_all(ARGV[data_at], placeholder, value)
  for i = 0, tonumber(ARGV[events_at]) - 1 do
    local e = events_at + 3 + i * 3
    ARGV[e] = replace_all(ARGV[e], placeholder, value)
  end
end
-- The store picks the assignee: ARGV[at] mode ('' none), [at+1] the placeholder standing for it in the ticket's
-- JSON (ARGV[data_at]) and in the events, [at+2] n agents, then the agents, then each one JSON-quoted. Returns
-- the assignee ('' for none, nil when not asked) and where the events begin.
local function assign_from(queue, at, data_at)
  local mode, placeholder, n = ARGV[at], ARGV[at + 1], tonumber(ARGV[at + 2])
  local events_at = at + 3 + 2 * n
  if mode == '' then return nil, events_at end
  local pick = nil
  if n > 0 and mode == 'least_open' then
    local best = nil
    for i = 1, n do
      local c = redis.call('SCARD', P .. 'load:' .. queue .. ':' .. ARGV[at + 2 + i])
      if best == nil or c < best then best, pick = c, i end
    end
  elseif n > 0 then
    pick = (redis.call('INCR', P .. 'turn:' .. queue) - 1) % n + 1
  end
  local assignee, quoted = '', 'null'
  if pick then assignee, quoted = ARGV[at + 2 + pick], ARGV[at + 2 + n + pick] end
  fill(placeholder, quoted, data_at, events_at)
  return assignee, events_at
end
-- "timer;flag;due": the ticket's next SLA check (score), and its at_risk/breached index entry by due time
local function set_sla(tkey, id, tail, packed)
  local timer, flag, due = string.match(packed, '^([^;]*);([^;]*);([^;]*)$')
  set_timer('ticket:' .. id, timer)
  local old = redis.call('HMGET', tkey, 'slaflag', 'slamember')
  if old[1] and old[1] ~= '' then redis.call('ZREM', P .. 'tix:sla:' .. old[1], old[2]) end
  local member = ''
  if flag ~= '' then
    member = due .. ':' .. tail
    redis.call('ZADD', P .. 'tix:sla:' .. flag, 0, member)
  end
  redis.call('HSET', tkey, 'slaflag', flag, 'slamember', member)
end
"""

# ARGV: 4 the number's placeholder, 5 ticket id, 6 ticket data, 7 status, 8 channel, 9 updated (20 digits),
# 10 conversation id, 11 expected conversation version, 12 new version, 13 conversation data, 14 episode,
# 15 the number's format (the counter goes in), 16 queue, 17 assignee, 18 active 1/0, 19 timer;sla flag;due
# (see set_sla), 20 assign mode ('' none), 21 the assignee's placeholder, 22 n agents, then the agents, then each
# one JSON-quoted, then the events
_CREATE_TICKET = (
    _PRELUDE
    + _TICKET_INDEX
    + _TICKET_LOAD
    + """
local ckey = P .. 'conv:' .. ARGV[10]
local v = redis.call('HGET', ckey, 'version')
if not v or v ~= ARGV[11] then return {'conflict'} end
local queue = ARGV[16]
local picked, events_at = assign_from(queue, 20, 6)
local assignee = picked or ARGV[17]
local seq = redis.call('INCR', P .. 'ticketseq')
local number = string.format(ARGV[15], seq)
fill(ARGV[4], number, 6, events_at)
local member = ARGV[9] .. ':' .. string.format('%012d', seq) .. ':' .. ARGV[5]
redis.call('HSET', P .. 'ticket:' .. ARGV[5], 'data', ARGV[6], 'version', '1', 'status', ARGV[7],
  'channel', ARGV[8], 'member', member, 'queue', queue, 'assignee', assignee, 'active', ARGV[18])
redis.call('SET', P .. 'ticketnum:' .. number, ARGV[5])
redis.call('ZADD', P .. 'tix-of:' .. cjson.decode(ARGV[6])['contact_id'], seq, ARGV[5])
index(member, ARGV[7], ARGV[8], true)
if ARGV[18] == '1' then load(queue, assignee, ARGV[5], true) end
set_sla(P .. 'ticket:' .. ARGV[5], ARGV[5], string.sub(member, 22), ARGV[19])
redis.call('HSET', ckey, 'version', ARGV[12], 'data', ARGV[13])
for _, mid in ipairs(redis.call('LRANGE', P .. 'conv-msgs:' .. ARGV[10], 0, -1)) do
  local f = redis.call('HMGET', P .. 'msg:' .. mid, 'episode', 'ticket_id')
  if f[1] == ARGV[14] and f[2] == '' then
    redis.call('HSET', P .. 'msg:' .. mid, 'ticket_id', ARGV[5])
  end
end
append_events(events_at)
return {'ok', assignee, number}
"""
)

# ARGV: 4 conversation id, 5 expected version, 6 new version, 7 data, 8 episode, 9 ticket id, 10.. events
_JOIN_TICKET = (
    _PRELUDE
    + """
local ckey = P .. 'conv:' .. ARGV[4]
local v = redis.call('HGET', ckey, 'version')
if not v or v ~= ARGV[5] then return 0 end
redis.call('HSET', ckey, 'version', ARGV[6], 'data', ARGV[7])
for _, mid in ipairs(redis.call('LRANGE', P .. 'conv-msgs:' .. ARGV[4], 0, -1)) do
  local f = redis.call('HMGET', P .. 'msg:' .. mid, 'episode', 'ticket_id')
  if f[1] == ARGV[8] and f[2] == '' then
    redis.call('HSET', P .. 'msg:' .. mid, 'ticket_id', ARGV[9])
  end
end
append_events(10)
return 1
"""
)

# ARGV: 4 id, 5 expected version, 6 new version, 7 data, 8 status, 9 updated (20 digits), 10 queue, 11 assignee,
# 12 active 1/0, 13 timer;sla flag;due, 14 assign mode ('' none), 15 placeholder, 16 n agents, then the agents,
# then each one JSON-quoted, then the events
_UPDATE_TICKET = (
    _PRELUDE
    + _TICKET_INDEX
    + _TICKET_LOAD
    + """
local key = P .. 'ticket:' .. ARGV[4]
local f = redis.call('HMGET', key, 'version', 'status', 'channel', 'member', 'queue', 'assignee', 'active')
if not f[1] then return {'missing'} end
if f[1] ~= ARGV[5] then return {'conflict'} end
index(f[4], f[2], f[3], false)
local member = ARGV[9] .. string.sub(f[4], 21)
index(member, ARGV[8], f[3], true)
if f[7] == '1' then load(f[5] or '', f[6] or '', ARGV[4], false) end
local picked, events_at = assign_from(ARGV[10], 14, 7)
local assignee = picked or ARGV[11]
if ARGV[12] == '1' then load(ARGV[10], assignee, ARGV[4], true) end
set_sla(key, ARGV[4], string.sub(member, 22), ARGV[13])
redis.call('HSET', key, 'version', ARGV[6], 'data', ARGV[7], 'status', ARGV[8], 'member', member,
  'queue', ARGV[10], 'assignee', assignee, 'active', ARGV[12])
append_events(events_at)
return {'ok', assignee}
"""
)

# ARGV: 1 key tag, 2 now, 3 held until, 4 limit; returns key, due pairs
_CLAIM_TIMERS = """
local due = redis.call('ZRANGEBYSCORE', ARGV[1] .. 'timers', '-inf', ARGV[2], 'WITHSCORES', 'LIMIT', 0,
  tonumber(ARGV[4]))
for i = 1, #due, 2 do
  redis.call('ZADD', ARGV[1] .. 'timers', ARGV[3], due[i])
end
return due
"""

_GET_TICKET = """
local data = redis.call('HGET', ARGV[1] .. 'ticket:' .. ARGV[2], 'data')
if data then return data end
local id = redis.call('GET', ARGV[1] .. 'ticketnum:' .. ARGV[2])
if not id then return false end
return redis.call('HGET', ARGV[1] .. 'ticket:' .. id, 'data')
"""

# ARGV: 4 message id, 5 delivery, 6 error, 7.. events
_RECORD_DELIVERY = (
    _PRELUDE
    + """
if redis.call('EXISTS', P .. 'msg:' .. ARGV[4]) == 1 then
  redis.call('HSET', P .. 'msg:' .. ARGV[4], 'delivery', ARGV[5], 'delivery_error', ARGV[6])
end
if ARGV[5] ~= 'retryable' then
  redis.call('ZREM', P .. 'outbox', ARGV[4])
  redis.call('HDEL', P .. 'outbox-for', ARGV[4])
end
append_events(7)
return 1
"""
)

# ARGV: 1 key tag, 2 message id, 3 new due (only if it is still in the outbox)
_HOLD_OUTGOING = """
redis.call('ZADD', ARGV[1] .. 'outbox', 'XX', ARGV[3], ARGV[2])
return 1
"""

# ARGV: 1 key tag, 2 now, 3 new due, 4 limit; returns id, in_reply_to pairs
_TAKE_OUTGOING = """
local ids = redis.call('ZRANGEBYSCORE', ARGV[1] .. 'outbox', '-inf', ARGV[2], 'LIMIT', 0, tonumber(ARGV[4]))
local out = {}
for _, id in ipairs(ids) do
  redis.call('ZADD', ARGV[1] .. 'outbox', ARGV[3], id)
  out[#out + 1] = id
  out[#out + 1] = redis.call('HGET', ARGV[1] .. 'outbox-for', id) or ''
end
return out
"""

_APPEND_EVENTS = _PRELUDE + "\nappend_events(4)\nreturn 1\n"

_MARK_HANDLED = """
if redis.call('EXISTS', ARGV[1] .. 'msg:' .. ARGV[2]) == 1 then
  redis.call('HSET', ARGV[1] .. 'msg:' .. ARGV[2], 'handled', '1')
end
redis.call('ZREM', ARGV[1] .. 'unhandled', ARGV[2])
return 1
"""

_FIND_MESSAGE = """
local id = redis.call('GET', ARGV[1] .. 'msgext:' .. ARGV[2])
if not id then return false end
return redis.call('HMGET', ARGV[1] .. 'msg:' .. id, 'data', 'ticket_id', 'delivery', 'delivery_error')
"""

# ARGV: 2 item id, 3 channel, 4 inbox, 5 reason, 6 raw (base64), 7 received at
_QUARANTINE = """
local key = ARGV[1] .. 'quarantine:' .. ARGV[2]
if redis.call('EXISTS', key) == 1 then return 0 end
redis.call('HSET', key, 'channel', ARGV[3], 'inbox', ARGV[4], 'reason', ARGV[5], 'raw', ARGV[6],
  'received_at', ARGV[7], 'replayed', '0')
local seq = redis.call('INCR', ARGV[1] .. 'quarantine-seq')
redis.call('ZADD', ARGV[1] .. 'quarantine-all', seq, ARGV[2])
redis.call('ZADD', ARGV[1] .. 'quarantine-pending', seq, ARGV[2])
return 1
"""

_MARK_REPLAYED = """
local key = ARGV[1] .. 'quarantine:' .. ARGV[2]
if redis.call('EXISTS', key) == 0 then return 0 end
redis.call('HSET', key, 'replayed', '1')
redis.call('ZREM', ARGV[1] .. 'quarantine-pending', ARGV[2])
return 1
"""

# Take or renew: granted when free, expired (Redis dropped the key) or already ours.
_LEASE = """
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""

_HIT = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
local left = redis.call('PTTL', KEYS[1])
if left < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[1]); left = tonumber(ARGV[1]) end
return {n, left}
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1
"""

_CAS = """
if (redis.call('GET', KEYS[1]) or '') ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2])
return 1
"""

_ADD_DEAD_LETTER = """
local key = ARGV[1] .. 'dead:' .. ARGV[2]
if redis.call('EXISTS', key) == 1 then return 0 end
redis.call('SET', key, ARGV[3])
redis.call('ZADD', ARGV[1] .. 'dead-order', redis.call('INCR', ARGV[1] .. 'dead-seq'), ARGV[2])
return 1
"""

_REMOVE_DEAD_LETTER = """
redis.call('ZREM', ARGV[1] .. 'dead-order', ARGV[2])
return redis.call('DEL', ARGV[1] .. 'dead:' .. ARGV[2])
"""

_COMMIT_RETRIES = 50
_TICKET_NUMBER = "HL-%06d"  # Lua's string.format with the ticket counter (SQLite: its row id)
_OPENING = 16  # new addresses of one bulk write whose contact and conversation are opened at once
_GAUGE_SAMPLE = 1000  # items read for the quarantine trend and the outbox age


def _us(at: datetime) -> str:
    """Microseconds since the epoch, zero-padded so that byte order is time order (a lex index)."""
    return f"{max(0, int(at.timestamp() * 1_000_000)):020d}"


def _ms(seconds: float) -> str:
    """A TTL for PX: whole milliseconds, at least one."""
    return str(max(1, int(seconds * 1000)))


def _add_message_args(
    message: Message,
    *,
    handled: bool,
    answers: str | None = None,
    saving: Conversation | None = None,
    outgoing: Outgoing | None = None,
    delivered: Delivery | None = None,
    checkpoints: Sequence[Checkpoint] = (),
) -> list[str]:
    """``_ADD_MESSAGE``'s ARGV from 4 up to its events, one list for ``add_message`` and the bulk call-log write,
    so the script's argument order is written once on this side."""
    unique = (
        f"{message.channel}:{message.inbox}:{message.direction}:{message.external_id}"
        if message.external_id is not None
        else ""
    )
    saved = dataclasses.replace(saving, version=saving.version + 1) if saving is not None else None
    return [
        message.id,
        message.conversation_id,
        unique,
        "1" if message.direction is Direction.INBOUND and not handled else "0",
        str(message.episode),
        message.ticket_id or "",
        message_json(message),  # encoded once for the message and its message.created event
        answers or "",
        saving.id if saving is not None else "",
        str(saving.version) if saving is not None else "",
        str(saved.version) if saved is not None else "",
        dumps(saved) if saved is not None else "",
        repr(time.time() + outgoing.hold_s) if outgoing is not None else "",
        (outgoing.in_reply_to or "") if outgoing is not None else "",
        str(delivered.status) if delivered is not None else "",
        (delivered.reason or delivered.error or "") if delivered is not None else "",
        str(len(checkpoints)),
        *(x for c in checkpoints for x in (c.key, c.value, "" if c.ttl_s is None else _ms(c.ttl_s))),
    ]


def _event_args(events: Sequence[DownstreamEvent]) -> list[str]:
    """(idempotency key, type, JSON tail after the id) per event; the script splices in the seq."""
    args = [str(len(events))]
    for e in events:
        body = e.to_json()
        del body["v"], body["id"]
        tail = json.dumps(body, ensure_ascii=False, separators=(",", ":"))
        args += [e.idempotency_key, str(e.type), "," + tail[1:]]
    return args


def event_from_entry(entry_id: str, fields: dict[str, str]) -> DownstreamEvent:
    doc = json.loads(fields["event"])
    return DownstreamEvent(
        seq=int(entry_id.split("-", 1)[0]),
        type=EventType(doc["type"]),
        data=doc["data"],
        occurred_at=datetime.fromisoformat(doc["occurred_at"]),
        idempotency_key=doc["idempotency_key"],
        ticket_id=doc["ticket_id"],
        conversation_id=doc["conversation_id"],
    )


def _load_message(data: str, ticket_id: str | None, delivery: str | None, error: str | None) -> Message:
    return dataclasses.replace(
        loads(Message, data),
        ticket_id=ticket_id or None,
        delivery=DeliveryStatus(delivery) if delivery else None,
        delivery_error=error or None,
    )


def _timer_score(ticket: Ticket) -> str:
    """The ticket's SLA index entries for the scripts: "<next check score>;<flag>;<earliest due, 20 digits>"."""
    if ticket.sla is None or not ticket.status.is_active:
        return ";;"
    at = ticket.sla.next_check_at()
    flag = ticket.sla.flag()
    due = ticket.sla.earliest_due_at()
    if due is None:
        flag = ""
    return f"{'' if at is None else repr(at.timestamp())};{flag};{_us(due) if due is not None else ''}"


def _matches(ticket: Ticket, query: TicketQuery) -> bool:
    if query.status is not None and ticket.status is not query.status:
        return False
    if query.channel is not None and ticket.channel is not query.channel:
        return False
    if query.inboxes is not None and ticket.inbox not in query.inboxes:
        return False
    for wanted, value in (
        (query.queue, ticket.queue),
        (query.category, ticket.category),
        (query.assignee, ticket.assignee),
    ):
        if wanted is not None and wanted != value:
            return False
    if query.updated_since is not None and ticket.updated_at < query.updated_since:
        return False
    if query.sla is not None:
        flag = ticket.sla.flag() if ticket.sla is not None and ticket.status.is_active else ""
        return flag == query.sla
    return True


def _address_field(inbox: str, address: Identity, thread: str) -> str:
    return f"{inbox}\n{address}\n{thread}"


class RedisBus:
    """Pub/sub between gateway instances: one connection, subscriptions added and dropped as sockets come and go."""

    def __init__(self, client: aioredis.Redis, tag: str, *, listener: aioredis.Redis | None = None) -> None:
        self._client = client
        self._listener = listener or client  # the subscription's connection comes from this one
        self._tag = tag
        self._pubsub: PubSub | None = None
        self._handlers: dict[str, BusHandler] = {}
        self._reader: asyncio.Task[None] | None = None
        self._resyncs: set[asyncio.Task[None]] = set()

    def channel(self, name: str) -> str:
        return self._tag + "bus:" + name

    async def start(self) -> None:
        self._pubsub = self._listener.pubsub(ignore_subscribe_messages=True)
        # Always subscribed to something, so the reader has a connection to wait on.
        await self._pubsub.subscribe(self.channel("_alive"))
        # redis-py reconnects and resubscribes on its own, often without an error reaching us; whatever was
        # published in between is gone, so every handler is told to catch up from the store.
        assert self._pubsub.connection is not None
        self._pubsub.connection.register_connect_callback(self._reconnected)
        self._reader = asyncio.get_running_loop().create_task(self._read(), name="redis-bus")

    RESYNC = json.dumps({"resync": True})  # what a handler gets after a reconnect: nothing specific, catch up

    async def _reconnected(self, connection: object) -> None:
        """Runs after redis-py's own resubscription; the catch-up goes on in the background."""
        task = asyncio.get_running_loop().create_task(self._resync(), name="redis-bus:resync")
        self._resyncs.add(task)
        task.add_done_callback(self._resyncs.discard)

    async def _resync(self, attempts: int = 8) -> None:
        """Each handler until it has caught up: right after an outage the store's own pooled connections
        may still be the dead ones, so a first try can fail where the next one works."""
        pending = dict(self._handlers)
        log.info("redis bus reconnected; %d subscribers catch up from the store", len(pending))
        delay = 0.1
        for attempt in range(1, attempts + 1):
            for channel, handler in list(pending.items()):
                if self._handlers.get(channel) is not handler:
                    pending.pop(channel)  # unsubscribed meanwhile
                    continue
                try:
                    await handler(self.RESYNC)
                    pending.pop(channel)
                except Exception as exc:
                    if attempt == attempts:
                        log.error("redis bus handler for %s could not catch up: %s", channel, exc)
            if not pending:
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def stop(self) -> None:
        reader, self._reader = self._reader, None
        for task in [*self._resyncs, *([reader] if reader is not None else [])]:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            await pubsub.aclose()

    async def publish(self, name: str, payload: str) -> int:
        """Returns how many instances are subscribed to ``name``."""
        return int(await self._client.publish(self.channel(name), payload))

    async def subscribe(self, name: str, handler: BusHandler) -> None:
        assert self._pubsub is not None, "bus is not started"
        self._handlers[self.channel(name)] = handler
        await self._pubsub.subscribe(self.channel(name))

    async def unsubscribe(self, name: str) -> None:
        if self._pubsub is None:
            return
        self._handlers.pop(self.channel(name), None)
        await self._pubsub.unsubscribe(self.channel(name))

    async def _read(self) -> None:
        assert self._pubsub is not None
        delay = 0.1
        while True:
            try:
                message = await self._pubsub.get_message(ignore_subscribe_messages=True, timeout=None)
                delay = 0.1
            except (RedisError, OSError) as exc:
                log.warning("redis bus connection lost (%s); reconnecting in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            if message is None or message.get("type") != "message":
                continue
            handler = self._handlers.get(str(message["channel"]))
            if handler is not None:
                try:
                    await handler(str(message["data"]))
                except Exception:  # one bad handler must not stop delivery to the others
                    log.exception("redis bus handler for %s failed", message["channel"])


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class RedisPool:
    """The connection pool's bounds: at most ``max_connections``, a command waits ``wait_s`` for a free one."""

    max_connections: int = 50
    wait_s: float = 5.0
    socket_timeout_s: float = 5.0
    connect_timeout_s: float = 2.0


@contextlib.contextmanager
def _reachable() -> Iterator[None]:
    """Redis down, partitioned or out of pooled connections: StoreUnavailable, one type the gateway answers 503 to."""
    try:
        yield
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError) as exc:
        raise StoreUnavailable(f"Redis is unreachable: {type(exc).__name__}: {exc}") from exc


class _Pipeline(aioredis.client.Pipeline):
    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        with _reachable():
            return await super().execute(raise_on_error)


class _Client(aioredis.Redis):
    """A client whose every command (scripts and pipelines too) reports an outage as StoreUnavailable."""

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        with _reachable():
            return await super().execute_command(*args, **options)  # type: ignore[no-untyped-call]

    def pipeline(self, transaction: bool = True, shard_hint: str | None = None) -> _Pipeline:
        return _Pipeline(self.connection_pool, self.response_callbacks, transaction, shard_hint)


class RedisStore(RedisAuditLog):
    replies_in_first_write = False  # two scripts: a crash between them must leave the message unhandled

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "huiliu:",
        stream_maxlen: int = 1_000_000,
        event_key_ttl_s: int = 90 * 86400,
        pool: RedisPool | None = None,
        aof_timeout_ms: int | None = None,
    ) -> None:
        """``aof_timeout_ms``: acknowledge inbound messages only once fsynced to the AOF (None: in memory)."""
        self._url = url
        self._aof_timeout_ms = aof_timeout_ms
        self._pool = pool or RedisPool()
        self._listener: aioredis.Redis | None = None
        self.tag = key_tag(prefix)
        self._maxlen = str(stream_maxlen)
        self._ttl = str(event_key_ttl_s)
        self._client: aioredis.Redis | None = None
        self._scripts: dict[str, AsyncScript] = {}
        self.bus: RedisBus | None = None

    # plumbing -------------------------------------------------------------
    @property
    def client(self) -> Any:
        """The connection pool; typed Any because with decode_responses every reply is str, which redis-py's
        annotations (str | bytes) cannot express."""
        if self._client is None:
            raise StoreError("store is not open")
        return self._client

    def key(self, name: str) -> str:
        return self.tag + name

    @property
    def stream_key(self) -> str:
        return self.key("events")

    async def open(self) -> None:
        # An explicit lib version: otherwise redis-py reads package metadata from disk for each new connection.
        driver = DriverInfo(name="redis-py", lib_version=redis.__version__)
        bounds = self._pool
        pool = FairConnectionPool.from_url(
            self._url,
            max_connections=bounds.max_connections,
            timeout=bounds.wait_s,
            socket_timeout=bounds.socket_timeout_s,
            socket_connect_timeout=bounds.connect_timeout_s,
            decode_responses=True,
            health_check_interval=30,
            driver_info=driver,
        )
        client = _Client(connection_pool=pool)
        self._client = client
        # The bus waits on its subscription for as long as nothing is published: its own connection, with no
        # read timeout, and none taken from the bounded pool.
        self._listener = aioredis.Redis.from_url(
            self._url,
            decode_responses=True,
            socket_connect_timeout=bounds.connect_timeout_s,
            health_check_interval=30,
            driver_info=driver,
        )
        sources = {
            "add_message": _ADD_MESSAGE,
            "save_conversation": _SAVE_CONVERSATION,
            "commit_contact": _COMMIT_CONTACT,
            "merge_contacts": _MERGE_CONTACTS,
            "find_conversation": _FIND_CONVERSATION,
            "create_ticket": _CREATE_TICKET,
            "update_ticket": _UPDATE_TICKET,
            "join_ticket": _JOIN_TICKET,
            "claim_timers": _CLAIM_TIMERS,
            "get_ticket": _GET_TICKET,
            "record_delivery": _RECORD_DELIVERY,
            "append_events": _APPEND_EVENTS,
            "mark_handled": _MARK_HANDLED,
            "hold_outgoing": _HOLD_OUTGOING,
            "take_outgoing": _TAKE_OUTGOING,
            "find_message": _FIND_MESSAGE,
            "quarantine": _QUARANTINE,
            "mark_replayed": _MARK_REPLAYED,
            "lease": _LEASE,
            "release": _RELEASE,
            "hit": _HIT,
            "cas": _CAS,
            "add_dead_letter": _ADD_DEAD_LETTER,
            "remove_dead_letter": _REMOVE_DEAD_LETTER,
        }
        self._scripts = {name: client.register_script(src) for name, src in sources.items()}
        await self._index_tickets_by_contact()
        if self._aof_timeout_ms is not None:
            await self._check_aof()
        self.bus = RedisBus(client, self.tag, listener=self._listener)
        await self.bus.start()

    async def _index_tickets_by_contact(self, batch: int = 500) -> None:
        """Tickets created before they were indexed by contact (``tix-of:<contact>``) get indexed, once per
        store: the marker is set only when every ticket was done, so an interrupted run just starts over."""
        marker = self.key("tix-of:indexed")
        if await self.client.exists(marker):
            return
        offset = 0
        while members := await self.client.zrange(self.key("tix"), offset, offset + batch - 1):
            offset += len(members)
            async with self.client.pipeline(transaction=False) as pipe:
                for member in members:
                    pipe.hget(self.key(f"ticket:{member.split(':', 2)[2]}"), "data")
                rows = await pipe.execute()
            async with self.client.pipeline(transaction=False) as pipe:
                for member, raw in zip(members, rows, strict=True):
                    if raw:
                        ticket = loads(Ticket, raw)
                        seq = int(member.split(":", 2)[1])
                        pipe.zadd(self.key(f"tix-of:{ticket.contact_id}"), {ticket.id: seq}, nx=True)
                await pipe.execute()
        await self.client.set(marker, "1")

    async def close(self) -> None:
        bus, self.bus = self.bus, None
        if bus is not None:
            await bus.stop()
        for client in (self._listener, self._client):
            if client is not None:
                await client.aclose(close_connection_pool=True)
        self._client = self._listener = None

    async def ping(self) -> bool:
        try:
            return bool(await self.client.ping())
        except (StoreError, RedisError, OSError):
            return False

    async def durability(self) -> dict[str, str]:
        """What an acknowledged message is worth on this server, for /readyz and the operator."""
        info = await self.client.info("persistence")
        server = await self.client.info("server")
        aof = bool(int(info.get("aof_enabled", 0)))
        return {
            "backend": "redis",
            "version": str(server.get("redis_version", "")),
            "appendonly": "yes" if aof else "no",
            "rdb_last_save_status": str(info.get("rdb_last_bgsave_status", "")),
            "acknowledged_after": "aof_fsync" if self._aof_timeout_ms is not None else "memory",
            "survives": "a Redis restart or crash"
            if self._aof_timeout_ms is not None
            else ("a Redis restart, and a crash except the last second" if aof else "nothing but a clean RDB save"),
        }

    async def _check_aof(self) -> None:
        """``durability: aof`` on a server that cannot wait for its AOF would acknowledge what it promises not to."""
        report = await self.durability()
        version = tuple(int(p) for p in report["version"].split(".")[:2] if p.isdigit())
        if version < (7, 2) or report["appendonly"] != "yes":
            await self.close()
            raise StoreError(
                "store.durability: aof needs Redis 7.2 or later with appendonly yes (WAITAOF); this server is"
                f" Redis {report['version']} with appendonly {report['appendonly']}"
            )

    async def _run(self, script: str, *args: str, keys: Sequence[str] = ()) -> Any:
        # The first key routes the call on Cluster; every key shares the tag, so any of ours will do.
        return await self._scripts[script](keys=list(keys) or [self.stream_key], args=list(args))

    async def _write(
        self,
        script: str,
        *args: str,
        events: Sequence[DownstreamEvent] = (),
        durable: bool = False,
        tail: Sequence[str] = (),
    ) -> Any:
        """``tail``: arguments after the events (``add_message``'s frame)."""
        argv = [self.tag, self._maxlen, self._ttl, *args, *_event_args(events), *tail]
        if not durable or self._aof_timeout_ms is None:
            return await self._run(script, *argv)
        # WAITAOF waits for the writes of its own connection: one pipeline puts the script and it on one. The
        # script goes in as a bare EVALSHA: handed a pipeline, redis-py's Script first asks SCRIPT EXISTS in a
        # round trip of its own; a server that lost its scripts (restarted) answers NOSCRIPT, and we load it.
        code = self._scripts[script]
        for attempt in range(2):
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.evalsha(code.sha, 1, self.stream_key, *argv)
                pipe.execute_command("WAITAOF", 1, 0, self._aof_timeout_ms)
                result, waited = await pipe.execute(raise_on_error=False)
            if isinstance(result, redis.exceptions.NoScriptError) and attempt == 0:
                await self.client.script_load(code.script)
                continue
            for outcome in (result, waited):
                if isinstance(outcome, Exception):
                    raise outcome
            break
        local, _ = waited
        if int(local) < 1:
            # Written, not yet on disk: the sender retries, finds it stored, and waits for the AOF again.
            raise StoreUnavailable(f"the write did not reach the AOF within {self._aof_timeout_ms} ms")
        return result

    # contacts ---------------------------------------------------------------
    async def _owners(self, identities: Sequence[Identity]) -> list[str | None]:
        found: list[str | None] = await self.client.mget([self.key(f"ident:{i}") for i in identities])
        return found

    async def _load_contact(self, contact_id: str) -> tuple[Contact | None, str]:
        raw = await self.client.get(self.key(f"contact:{contact_id}"))
        return (loads(Contact, raw), raw) if raw else (None, "")

    async def _commit_contact(
        self,
        identity: Identity,
        name: str | None,
        now: datetime,
        aliases: Sequence[Identity],
        conversation: Callable[[Contact], Conversation] | None = None,
        address_field: str = "",
    ) -> tuple[str, Contact | None, str | None]:
        """Mirror of SQLite's contact resolution, computed here and committed only if nothing changed meanwhile.

        Returns (outcome, contact, existing conversation id) where outcome is "ok" or "exists".
        """
        everyone = [identity, *aliases]
        for _ in range(_COMMIT_RETRIES):
            owners = await self._owners(everyone)
            owner_id = next((o for o in owners if o), None)
            contact, expected = (None, "") if owner_id is None else await self._load_contact(owner_id)
            if owner_id is not None and contact is None:
                continue  # being written right now
            if contact is None:
                contact = Contact(id=f"ct_{random_hex()}", name=name, identities=(), created_at=now)
            identities, flags, links = list(contact.identities), list(contact.flags), []
            for each, owner in zip(everyone, owners, strict=True):
                if each in identities:
                    continue
                if owner:
                    if f"ambiguous:{each}" not in flags:
                        flags.append(f"ambiguous:{each}")  # another contact has it: flag, never merge on our own
                    continue
                identities.append(each)
                links.append(str(each))
            updated = dataclasses.replace(contact, identities=tuple(identities), flags=tuple(flags))
            new_data = dumps(updated) if updated != contact or not expected else ""
            checks = [x for each, owner in zip(everyone, owners, strict=True) for x in (str(each), owner or "")]
            conv = conversation(updated) if conversation is not None else None
            result = await self._run(
                "commit_contact",
                self.tag,
                contact.id,
                expected,
                new_data,
                address_field,
                conv.id if conv else "",
                dumps(conv) if conv else "",
                str(len(everyone)),
                *checks,
                str(len(links)),
                *links,
            )
            if result[0] == "ok":
                return "ok", updated, None
            if result[0] == "exists":
                return "exists", None, str(result[1])
        raise StoreError(f"could not settle the contact of {identity} (too much contention)")

    async def contact_for(self, identity: Identity, *, name: str | None, now: datetime) -> Contact:
        (owner,) = await self._owners([identity])
        if owner:
            found, _ = await self._load_contact(owner)
            if found is not None:
                return found
        _, contact, _ = await self._commit_contact(identity, name, now, ())
        assert contact is not None
        return contact

    async def get_contact(self, contact_id: str) -> Contact | None:
        contact, _ = await self._load_contact(contact_id)
        return contact

    async def save_contact(self, contact: Contact, *, expected_version: int | None = None) -> Contact:
        for _ in range(_COMMIT_RETRIES):
            stored, raw = await self._load_contact(contact.id)
            if stored is None:
                raise NotFound(f"contact {contact.id} does not exist")
            if expected_version is not None and stored.version != expected_version:
                raise VersionConflict(f"contact {contact.id} changed since version {expected_version}")
            kept = dataclasses.replace(contact, identities=stored.identities, version=stored.version + 1)
            if await self._run("cas", raw, dumps(kept), keys=[self.key(f"contact:{contact.id}")]):
                return kept
        raise StoreError(f"contact {contact.id} kept changing")

    async def contact_by_identity(self, identity: Identity) -> Contact | None:
        (owner,) = await self._owners([identity])
        if not owner:
            return None
        contact, _ = await self._load_contact(owner)
        return contact

    async def tickets_of(self, contact_id: str) -> list[Ticket]:
        ids = await self.client.zrange(self.key(f"tix-of:{contact_id}"), 0, -1)
        async with self.client.pipeline(transaction=False) as pipe:
            for ticket_id in ids:
                pipe.hget(self.key(f"ticket:{ticket_id}"), "data")
            rows = await pipe.execute()
        return [loads(Ticket, r) for r in rows if r]

    async def merge_contacts(self, source_id: str, into_id: str, *, events: Sequence[DownstreamEvent] = ()) -> Contact:
        for _ in range(_COMMIT_RETRIES):
            source, source_raw = await self._load_contact(source_id)
            into, into_raw = await self._load_contact(into_id)
            for contact, wanted in ((source, source_id), (into, into_id)):
                if contact is None:
                    raise NotFound(f"contact {wanted} does not exist")
            assert source is not None and into is not None
            merged = merged_contact(source, into)
            pointer = dataclasses.replace(source, identities=(), merged_into=into_id, version=source.version + 1)
            conversations = await self.conversations_of(source_id)
            tickets = await self.tickets_of(source_id)
            conv_args = [
                x
                for c in conversations
                for x in (
                    c.id,
                    str(c.version),
                    dumps(dataclasses.replace(c, contact_id=into_id, version=c.version + 1)),
                )
            ]
            ticket_args = [
                x
                for t in tickets
                for x in (
                    t.id,
                    str(t.version),
                    dumps(dataclasses.replace(t, contact_id=into_id, version=t.version + 1)),
                )
            ]
            done = await self._write(
                "merge_contacts",
                source_id,
                source_raw,
                dumps(pointer),
                into_id,
                into_raw,
                dumps(merged),
                str(len(source.identities)),
                *(str(i) for i in source.identities),
                str(len(conversations)),
                *conv_args,
                str(len(tickets)),
                *ticket_args,
                events=events,
            )
            if done:
                return merged
        raise StoreError(f"contacts {source_id} and {into_id} kept changing")

    async def add_identity(self, contact_id: str, identity: Identity) -> bool:
        """Test support, outside the Store protocol: link a verified identity to a contact; False (and nothing
        changed) if another contact owns it. The gateway links identities only through conversation_for."""
        for _ in range(_COMMIT_RETRIES):
            contact, raw = await self._load_contact(contact_id)
            if contact is None:
                raise NotFound(f"contact {contact_id} does not exist")
            (owner,) = await self._owners([identity])
            if owner:
                return owner == contact_id
            grown = dataclasses.replace(contact, identities=(*contact.identities, identity))
            result = await self._run(
                "commit_contact", self.tag, contact_id, raw, dumps(grown), "", "", "", "1", str(identity), "", "1",
                str(identity),
            )  # fmt: skip
            if result[0] == "ok":
                return True
        raise StoreError(f"contact {contact_id} kept changing")

    # conversations ----------------------------------------------------------
    async def conversation_for(
        self,
        address: Identity,
        *,
        channel: Channel,
        inbox: str,
        name: str | None,
        now: datetime,
        thread: str = "",
        aliases: Sequence[Identity] = (),
        admit: Admission | None = None,
    ) -> Conversation:
        field = _address_field(inbox, address, thread)
        # The claim rides on the first read: one round trip for a WeChat push's nonce and its conversation.
        claim = [admit.key, admit.holder, _ms(admit.ttl_s)] if admit is not None else []
        for _ in range(_COMMIT_RETRIES):
            granted, *found = await self._run("find_conversation", self.tag, field, *claim)
            if not granted:
                raise AdmissionRefused(f"{claim[0]} is held for another holder")
            claim = []  # taken
            if found and found[0]:
                return loads(Conversation, found[0])
            fresh_id = f"cv_{random_hex()}"

            def fresh(contact: Contact, fresh_id: str = fresh_id) -> Conversation:
                return opened_conversation(fresh_id, contact.id, channel, inbox, address, thread, now)

            outcome, contact, _ = await self._commit_contact(address, name, now, aliases, fresh, field)
            if outcome == "ok":
                assert contact is not None
                return fresh(contact)
        raise StoreError(f"could not settle the conversation of {address} on {inbox}")

    async def get_conversation(self, conversation_id: str) -> Conversation | None:
        raw = await self.client.hget(self.key(f"conv:{conversation_id}"), "data")
        return loads(Conversation, raw) if raw else None

    async def find_conversation(self, inbox: str, address: Identity, thread: str = "") -> Conversation | None:
        _, *found = await self._run("find_conversation", self.tag, _address_field(inbox, address, thread))
        return loads(Conversation, found[0]) if found and found[0] else None

    async def conversations_of(self, contact_id: str) -> list[Conversation]:
        ids = await self.client.lrange(self.key(f"conv-of:{contact_id}"), 0, -1)
        async with self.client.pipeline(transaction=False) as pipe:
            for conversation_id in ids:
                pipe.hget(self.key(f"conv:{conversation_id}"), "data")
            rows = await pipe.execute()
        return [loads(Conversation, r) for r in rows if r]

    async def save_conversation(
        self, conversation: Conversation, events: Sequence[DownstreamEvent] = ()
    ) -> Conversation:
        saved = dataclasses.replace(conversation, version=conversation.version + 1)
        ok = await self._write(
            "save_conversation",
            conversation.id,
            str(conversation.version),
            str(saved.version),
            dumps(saved),
            events=events,
        )
        if not ok:
            raise VersionConflict(f"conversation {conversation.id} changed since version {conversation.version}")
        return saved

    # messages -----------------------------------------------------------------
    async def receive_first(
        self,
        address: Identity,
        *,
        channel: Channel,
        inbox: str,
        name: str | None,
        now: datetime,
        build: FirstBuild,
        thread: str = "",
        aliases: Sequence[Identity] = (),
        admit: Admission | None = None,
    ) -> tuple[Conversation, tuple[Message, bool] | None]:
        """Two round trips, as the two calls: ``build`` is Python, which a script cannot run between them."""
        conversation = await self.conversation_for(
            address, channel=channel, inbox=inbox, name=name, now=now, thread=thread, aliases=aliases, admit=admit
        )
        write = build(conversation)
        if write is None:
            return conversation, None
        assert write.reply is None, "replies_in_first_write is False: intake answers after the write"
        stored = await self.add_message(
            write.message, write.events, handled=write.handled, checkpoints=write.checkpoints
        )
        return conversation, stored

    async def add_message(
        self,
        message: Message,
        events: Sequence[DownstreamEvent] = (),
        *,
        answers: str | None = None,
        saving: Conversation | None = None,
        outgoing: Outgoing | None = None,
        handled: bool = False,
        checkpoints: Sequence[Checkpoint] = (),
        delivered: Delivery | None = None,
    ) -> tuple[Message, bool]:
        result = await self._write(
            "add_message",
            *_add_message_args(
                message,
                handled=handled,
                answers=answers,
                saving=saving,
                outgoing=outgoing,
                delivered=delivered,
                checkpoints=checkpoints,
            ),
            events=events,
            durable=message.direction is Direction.INBOUND,  # what a sender's acknowledgement waits for
        )
        if result[0] == 2:
            assert saving is not None
            raise VersionConflict(f"conversation {saving.id} changed since version {saving.version}")
        if result[0] == 1:  # the checkpoints were set in the same script, with the new message
            return message, True
        return _load_message(*result[1:5]), False

    _MESSAGE_FIELDS = ("data", "ticket_id", "delivery", "delivery_error")

    async def get_message(self, message_id: str) -> Message | None:
        row = await self.client.hmget(self.key(f"msg:{message_id}"), self._MESSAGE_FIELDS)
        return _load_message(*row) if row[0] else None

    async def find_message(
        self, *, channel: Channel, inbox: str, direction: Direction, external_id: str
    ) -> Message | None:
        row = await self._run("find_message", self.tag, f"{channel}:{inbox}:{direction}:{external_id}")
        return _load_message(*row) if row and row[0] else None

    async def stored_external_ids(
        self, *, channel: Channel, inbox: str, direction: Direction, external_ids: Sequence[str]
    ) -> set[str]:
        found: set[str] = set()
        for start in range(0, len(external_ids), 1000):
            part = external_ids[start : start + 1000]
            ids = await self.client.mget([self.key(f"msgext:{channel}:{inbox}:{direction}:{e}") for e in part])
            found.update(e for e, id_ in zip(part, ids, strict=True) if id_ is not None)
        return found

    async def add_ticket_lines(self, lines: Sequence[TicketLine]) -> list[TicketLineStored | None]:
        """None for every line: ``build`` decides on reads made inside the write, which one script cannot hand
        to Python and back, so intake takes each line alone (as many round trips as before)."""
        return [None] * len(lines)

    async def add_log_lines(self, lines: Sequence[LogLine]) -> list[tuple[Message, bool] | None]:
        """The addresses' conversations in one pipeline (a new address opens its own, as ``conversation_for``
        does), then every line's ``add_message`` script in one pipeline: each line is atomic on its own, and a
        line written twice (a kill between the two, then a re-run) is found by its unique key."""
        if not lines:
            return []
        firsts: dict[str, LogLine] = {}
        for line in lines:
            firsts.setdefault(_address_field(line.inbox, line.address, line.thread), line)
        async with self.client.pipeline(transaction=False) as pipe:
            for field in firsts:
                await self._scripts["find_conversation"](keys=[self.stream_key], args=[self.tag, field], client=pipe)
            found = await pipe.execute()
        conversations: dict[str, Conversation | None] = {}  # None: stopped
        gate = asyncio.Semaphore(_OPENING)

        async def opened(field: str, line: LogLine) -> None:
            async with gate:  # a new address: its contact and conversation, as conversation_for opens them
                conversations[field] = await self.conversation_for(
                    line.address,
                    channel=line.channel,
                    inbox=line.inbox,
                    name=line.name,
                    now=line.now,
                    thread=line.thread,
                    aliases=line.aliases,
                )

        new: list[tuple[str, LogLine]] = []
        for (field, first), (_, *raw) in zip(firsts.items(), found, strict=True):
            if raw and raw[0]:
                conversations[field] = loads(Conversation, raw[0])
            else:
                new.append((field, first))
        await asyncio.gather(*(opened(field, first) for field, first in new))
        results: list[tuple[Message, bool] | None] = [None] * len(lines)
        built: list[tuple[int, Message]] = []
        async with self.client.pipeline(transaction=False) as pipe:
            for i, line in enumerate(lines):
                field = _address_field(line.inbox, line.address, line.thread)
                conversation = conversations[field]
                made = line.build(conversation) if conversation is not None else None
                if made is None:
                    conversations[field] = None  # this line and the address's later ones go to intake alone
                    continue
                message, message_events = made
                args = [
                    *(self.tag, self._maxlen, self._ttl),
                    *_add_message_args(message, handled=True),  # answers nothing, saves nothing, no outbox
                    *_event_args(message_events),
                ]
                await self._scripts["add_message"](keys=[self.stream_key], args=args, client=pipe)
                built.append((i, message))
            if self._aof_timeout_ms is not None and built:
                pipe.execute_command("WAITAOF", 1, 0, self._aof_timeout_ms)
            replies = await pipe.execute() if built else []
        if self._aof_timeout_ms is not None and built:
            local, _ = replies.pop()
            if int(local) < 1:
                raise StoreUnavailable(f"the write did not reach the AOF within {self._aof_timeout_ms} ms")
        for (i, message), reply in zip(built, replies, strict=True):
            results[i] = (message, True) if reply[0] == 1 else (_load_message(*reply[1:5]), False)
        return results

    async def record_delivery(
        self, message_id: str, delivery: Delivery, events: Sequence[DownstreamEvent] = ()
    ) -> None:
        await self._write(
            "record_delivery",
            message_id,
            str(delivery.status),
            delivery.reason or delivery.error or "",
            events=events,
        )

    async def requeue(self, message_id: str, in_reply_to: str | None, hold_s: float) -> None:
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.zadd(self.key("outbox"), {message_id: time.time() + hold_s})
            pipe.hset(self.key("outbox-for"), message_id, in_reply_to or "")
            await pipe.execute()

    async def hold_outgoing(self, message_id: str, hold_s: float) -> None:
        await self._run("hold_outgoing", self.tag, message_id, repr(time.time() + hold_s))

    async def take_outgoing(self, hold_s: float, limit: int = 100) -> list[tuple[Message, str | None]]:
        now = time.time()
        flat = await self._run("take_outgoing", self.tag, repr(now), repr(now + hold_s), str(limit))
        pairs = dict(zip(flat[::2], flat[1::2], strict=True))
        return [(m, pairs[m.id] or None) for m, _ in await self._messages(list(pairs))]

    async def _messages(self, ids: Sequence[str]) -> list[tuple[Message, str]]:
        async with self.client.pipeline(transaction=False) as pipe:
            for message_id in ids:
                pipe.hmget(self.key(f"msg:{message_id}"), [*self._MESSAGE_FIELDS, "episode"])
            rows = await pipe.execute()
        return [(_load_message(*row[:4]), row[4]) for row in rows if row[0]]

    async def messages(
        self, conversation_id: str, *, ticket_id: str | None = None, episode: int | None = None
    ) -> list[Message]:
        ids = await self.client.lrange(self.key(f"conv-msgs:{conversation_id}"), 0, -1)
        return [
            m
            for m, _ in await self._messages(ids)
            if (ticket_id is None or m.ticket_id == ticket_id) and (episode is None or m.episode == episode)
        ]

    async def mark_handled(self, message_id: str) -> None:
        await self._run("mark_handled", self.tag, message_id)

    async def unhandled_messages(self) -> list[Message]:
        ids = await self.client.zrange(self.key("unhandled"), 0, -1)
        return [m for m, _ in await self._messages(ids)]

    # tickets ------------------------------------------------------------------
    async def create_ticket(
        self,
        ticket: Ticket,
        conversation: Conversation,
        events: TicketEvents,
        *,
        assign: Assignment | None = None,
    ) -> tuple[Ticket, Conversation]:
        saved = dataclasses.replace(conversation, ticket_id=ticket.id, version=conversation.version + 1)
        picking = assign is not None and ticket.assignee is None
        # The script picks the assignee and writes it where the placeholder stands (ticket and events).
        placeholder = f"@@assignee-{uuid.uuid4().hex}@@"
        draft = dataclasses.replace(ticket, assignee=placeholder) if picking else ticket
        agents = assign.agents if assign is not None and picking else ()
        # The script takes the number from the counter once the version check has passed (a conflict burns none)
        # and writes it where the placeholder stands. A number read here first and checked there made every
        # creator but one start over: 32 callers' missed calls at once ran out of retries (issue 23).
        hole = f"@@number-{ticket.id}@@"
        numbered = dataclasses.replace(draft, number=hole)
        outcome = await self._write(
            "create_ticket",
            hole,
            ticket.id,
            dumps(numbered),
            str(ticket.status),
            str(ticket.channel),
            _us(ticket.updated_at),
            conversation.id,
            str(conversation.version),
            str(saved.version),
            dumps(saved),
            str(conversation.episode),
            _TICKET_NUMBER,
            ticket.queue or "",
            ticket.assignee or "",
            "1" if ticket.status.is_active else "0",
            _timer_score(ticket),
            assign.mode if assign is not None and picking else "",
            f'"{placeholder}"',
            str(len(agents)),
            *agents,
            *(json.dumps(a, ensure_ascii=False) for a in agents),
            events=events(numbered, saved),
        )
        if outcome[0] == "ok":
            return dataclasses.replace(numbered, number=outcome[2], assignee=outcome[1] or None), saved
        raise VersionConflict(f"conversation {conversation.id} changed since version {conversation.version}")

    async def join_ticket(self, conversation: Conversation, events: Sequence[DownstreamEvent] = ()) -> Conversation:
        saved = dataclasses.replace(conversation, version=conversation.version + 1)
        ok = await self._write(
            "join_ticket",
            conversation.id,
            str(conversation.version),
            str(saved.version),
            dumps(saved),
            str(conversation.episode),
            conversation.ticket_id or "",
            events=events,
        )
        if not ok:
            raise VersionConflict(f"conversation {conversation.id} changed since version {conversation.version}")
        return saved

    async def get_ticket(self, ticket_id_or_number: str) -> Ticket | None:
        raw = await self._run("get_ticket", self.tag, ticket_id_or_number)
        return loads(Ticket, raw) if raw else None

    async def update_ticket(
        self, ticket: Ticket, events: Sequence[DownstreamEvent] = (), *, assign: Assignment | None = None
    ) -> Ticket:
        picking = assign is not None and ticket.assignee is None
        placeholder = f"@@assignee-{uuid.uuid4().hex}@@"
        saved = dataclasses.replace(ticket, version=ticket.version + 1)
        draft = dataclasses.replace(saved, assignee=placeholder) if picking else saved
        agents = assign.agents if assign is not None and picking else ()
        outcome = await self._write(
            "update_ticket",
            ticket.id,
            str(ticket.version),
            str(saved.version),
            dumps(draft),
            str(saved.status),
            _us(saved.updated_at),
            saved.queue or "",
            saved.assignee or "",
            "1" if saved.status.is_active else "0",
            _timer_score(saved),
            assign.mode if assign is not None and picking else "",
            f'"{placeholder}"',
            str(len(agents)),
            *agents,
            *(json.dumps(a, ensure_ascii=False) for a in agents),
            events=fill_assignee(events, placeholder) if agents else events,
        )
        if outcome[0] == "missing":
            raise NotFound(f"ticket {ticket.id} does not exist")
        if outcome[0] == "conflict":
            raise VersionConflict(f"ticket {ticket.id} changed since version {ticket.version}")
        return dataclasses.replace(saved, assignee=outcome[1] or None)

    async def list_tickets(self, query: TicketQuery) -> TicketPage:
        if query.sla is not None:
            return await self._tickets_by_due(query)
        if query.status is not None:
            index = self.key(f"tix:status:{query.status}")
        elif query.channel is not None:
            index = self.key(f"tix:channel:{query.channel}")
        else:
            index = self.key("tix")
        start = "-"
        if query.updated_since is not None:
            start = f"[{_us(query.updated_since)}:"
        if query.cursor is not None:
            after_us, after_seq = decode_cursor(query.cursor, 2)
            # ";" sorts right after ":", so this skips every member of the cursor's (time, seq).
            after = f"[{after_us:020d}:{after_seq:012d};"
            start = max(start, after) if start != "-" else after
        found = await self._scan(index, start, query, query.limit + 1)
        page = found[: query.limit]
        cursor = None
        if len(found) > query.limit and page:
            us, seq, _ = page[-1][1].split(":", 2)
            cursor = encode_cursor(int(us), int(seq))
        return TicketPage(tickets=tuple(t for t, _ in page), next_cursor=cursor)

    async def _scan(self, index: str, start: str, query: TicketQuery, want: int | None) -> list[tuple[Ticket, str]]:
        found: list[tuple[Ticket, str]] = []
        batch = max((want or 0) + 1, 50)
        offset = 0
        while want is None or len(found) < want:
            members: list[str] = await self.client.zrangebylex(index, start, "+", start=offset, num=batch)
            if not members:
                break
            offset += len(members)
            async with self.client.pipeline(transaction=False) as pipe:
                for member in members:
                    pipe.hget(self.key(f"ticket:{member.split(':', 2)[2]}"), "data")
                rows = await pipe.execute()
            for member, raw in zip(members, rows, strict=True):
                if not raw:
                    continue
                ticket = loads(Ticket, raw)
                if _matches(ticket, query):
                    found.append((ticket, member))
        return found

    async def _tickets_by_due(self, query: TicketQuery) -> TicketPage:
        """At-risk or breached tickets by due time, from their index (members "<due>:<seq>:<id>")."""
        index = self.key(f"tix:sla:{query.sla}")
        start = "-"
        if query.cursor is not None:
            after_us, after_seq = decode_cursor(query.cursor, 2)
            start = f"[{after_us:020d}:{after_seq:012d};"
        found = await self._scan(index, start, query, query.limit + 1)
        page = found[: query.limit]
        cursor = None
        if len(found) > query.limit and page:
            us, seq, _ = page[-1][1].split(":", 2)
            cursor = encode_cursor(int(us), int(seq))
        return TicketPage(tickets=tuple(t for t, _ in page), next_cursor=cursor)

    # events -------------------------------------------------------------------
    async def append_events(self, events: Sequence[DownstreamEvent]) -> None:
        """Test support, outside the Store protocol: events with no record change (the gateway writes events
        only together with the change they report)."""
        if events:
            await self._write("append_events", events=events)

    async def events_after(self, seq: int, limit: int = 100) -> list[DownstreamEvent]:
        entries = await self.client.xrange(self.stream_key, min=f"{seq + 1}-0", max="+", count=limit)
        return [event_from_entry(entry_id, fields) for entry_id, fields in entries]

    # frames -------------------------------------------------------------------
    async def push_frame(self, address: Identity, body: dict[str, Any]) -> int:
        # The list's length after the push is the frame's number: gapless, and atomic in one command.
        return int(await self.client.rpush(self.key(f"frames:{address}"), json.dumps(body, ensure_ascii=False)))

    async def add_framed_message(
        self,
        message: Message,
        events: Sequence[DownstreamEvent],
        *,
        frame: Frame,
        delivered: Delivery,
        answers: str | None = None,
        saving: Conversation | None = None,
    ) -> tuple[Message, int | None]:
        result = await self._write(
            "add_message",
            *_add_message_args(message, handled=False, answers=answers, saving=saving, delivered=delivered),
            events=events,
            tail=(str(frame.address), json.dumps(frame.body, ensure_ascii=False)),
        )
        if result[0] == 2:
            assert saving is not None
            raise VersionConflict(f"conversation {saving.id} changed since version {saving.version}")
        if result[0] == 1:
            return message, int(result[1])
        return _load_message(*result[1:5]), None

    async def frames_after(self, address: Identity, seq: int, limit: int = 500) -> list[StoredFrame]:
        rows = await self.client.lrange(self.key(f"frames:{address}"), seq, seq + limit - 1)
        return [StoredFrame(seq=seq + 1 + n, body=json.loads(body)) for n, body in enumerate(rows)]

    async def last_frame_seq(self, address: Identity) -> int:
        return int(await self.client.llen(self.key(f"frames:{address}")))

    # quarantine -----------------------------------------------------------------
    async def quarantine(self, item: QuarantinedItem) -> bool:
        return bool(
            await self._run(
                "quarantine",
                self.tag,
                item.id,
                str(item.channel),
                item.inbox,
                item.reason,
                base64.b64encode(item.raw).decode(),
                item.received_at.isoformat(),
            )
        )

    async def _quarantined(self, ids: Sequence[str]) -> list[QuarantinedItem]:
        async with self.client.pipeline(transaction=False) as pipe:
            for item_id in ids:
                pipe.hgetall(self.key(f"quarantine:{item_id}"))
            rows = await pipe.execute()
        return [
            QuarantinedItem(
                id=item_id,
                channel=Channel(row["channel"]),
                inbox=row["inbox"],
                reason=row["reason"],
                raw=base64.b64decode(row["raw"]),
                received_at=datetime.fromisoformat(row["received_at"]),
                replayed=row["replayed"] == "1",
            )
            for item_id, row in zip(ids, rows, strict=True)
            if row
        ]

    async def quarantined(self, *, include_replayed: bool = False, limit: int = 100) -> list[QuarantinedItem]:
        index = self.key("quarantine-all" if include_replayed else "quarantine-pending")
        return await self._quarantined(await self.client.zrange(index, 0, limit - 1))

    async def get_quarantined(self, item_id: str) -> QuarantinedItem | None:
        found = await self._quarantined([item_id])
        return found[0] if found else None

    async def mark_replayed(self, item_id: str) -> None:
        await self._run("mark_replayed", self.tag, item_id)

    # dead letters -----------------------------------------------------------------
    async def add_dead_letter(self, letter: DeadLetter) -> bool:
        return bool(await self._run("add_dead_letter", self.tag, letter.id, dumps(letter)))

    async def dead_letters(self, *, subscription: str | None = None, limit: int = 100) -> list[DeadLetter]:
        found: list[DeadLetter] = []
        offset = 0
        while len(found) < limit:
            ids = await self.client.zrange(self.key("dead-order"), offset, offset + 499)
            if not ids:
                break
            offset += len(ids)
            rows = await self.client.mget([self.key(f"dead:{i}") for i in ids])
            for raw in rows:
                if raw:
                    letter = loads(DeadLetter, raw)
                    if subscription is None or letter.subscription == subscription:
                        found.append(letter)
        return found[:limit]

    async def get_dead_letter(self, letter_id: str) -> DeadLetter | None:
        raw = await self.client.get(self.key(f"dead:{letter_id}"))
        return loads(DeadLetter, raw) if raw else None

    async def remove_dead_letter(self, letter_id: str) -> bool:
        return bool(await self._run("remove_dead_letter", self.tag, letter_id))

    # timers ---------------------------------------------------------------------
    async def set_timer(self, key: str, due_at: datetime | None) -> None:
        if due_at is None:
            await self.client.zrem(self.key("timers"), key)
        else:
            await self.client.zadd(self.key("timers"), {key: due_at.timestamp()})

    async def claim_due_timers(self, now: datetime, hold_s: float, limit: int = 100) -> list[DueTimer]:
        t = now.timestamp()
        flat = await self._run("claim_timers", self.tag, repr(t), repr(t + hold_s), str(limit))
        return [
            DueTimer(key=flat[i], due_at=datetime.fromtimestamp(float(flat[i + 1]), UTC))
            for i in range(0, len(flat), 2)
        ]

    # small shared state ---------------------------------------------------------
    async def claim(self, key: str, ttl_s: float) -> bool:
        ms = max(1, int(ttl_s * 1000))
        return bool(await self.client.set(self.key(f"claim:{key}"), "1", nx=True, px=ms))

    async def lease(self, key: str, holder: str, ttl_s: float) -> bool:
        ms = str(max(1, int(ttl_s * 1000)))
        return bool(await self._run("lease", holder, ms, keys=[self.key(f"claim:{key}")]))

    async def release(self, key: str, holder: str) -> None:
        await self._run("release", holder, keys=[self.key(f"claim:{key}")])

    async def hit(self, key: str, window_s: float) -> Hits:
        count, left_ms = await self._run("hit", str(max(1, int(window_s * 1000))), keys=[self.key(f"hits:{key}")])
        return Hits(count=int(count), reset_in_s=int(left_ms) / 1000)

    async def purge_expired(self, limit: int = 1000) -> int:
        """Claims, leases and checkpoints with a TTL are keys with an expiry: Redis drops them itself."""
        return 0

    async def get_secret(self, name: str, now: datetime) -> str | None:
        row = await self.client.hmget(self.key(f"secret:{name}"), ["value", "expires_at"])
        if row[0] is None or (row[1] and datetime.fromisoformat(row[1]) <= now):
            return None
        return str(row[0])

    async def set_secret(self, name: str, value: str, expires_at: datetime | None) -> None:
        await self.client.hset(
            self.key(f"secret:{name}"),
            mapping={"value": value, "expires_at": expires_at.isoformat() if expires_at else ""},
        )

    async def gauges(self, *, since: datetime) -> Gauges:
        async with self.client.pipeline(transaction=False) as pipe:
            for status in TicketStatus:
                pipe.zcard(self.key(f"tix:status:{status}"))
            pipe.zcard(self.key("quarantine-pending"))
            pipe.zrange(self.key("quarantine-pending"), -_GAUGE_SAMPLE, -1)
            pipe.zcard(self.key("outbox"))
            pipe.zrange(self.key("outbox"), 0, _GAUGE_SAMPLE - 1)
            *counts, pending, newest, size, waiting = await pipe.execute()
        statuses = {str(s): int(n) for s, n in zip(TicketStatus, counts, strict=True) if n}
        # The newest pending items and the outbox's first due: enough for the trend and the age an operator
        # acts on, without reading a large backlog on every scrape.
        recent = [q for q in await self._quarantined(newest) if q.received_at >= since]
        created = [m.created_at for m, _ in await self._messages(waiting)]
        return Gauges(
            tickets_by_status=statuses,
            quarantine_pending=int(pending),
            quarantined_since=len(recent),
            outbox_size=int(size),
            outbox_oldest=min(created, default=None),
        )

    async def get_checkpoint(self, key: str) -> str | None:
        value = await self.client.get(self.key(f"checkpoint:{key}"))
        return str(value) if value is not None else None

    async def set_checkpoint(self, key: str, value: str, *, ttl_s: float | None = None) -> None:
        # A plain SET also clears an earlier expiry: without ttl_s the checkpoint is kept.
        px = max(1, int(ttl_s * 1000)) if ttl_s is not None else None
        await self.client.set(self.key(f"checkpoint:{key}"), value, px=px)

    async def set_checkpoints(self, checkpoints: Sequence[Checkpoint]) -> None:
        # Independent SETs: one pipeline, no transaction (each write stands alone, as set_checkpoint's does).
        async with self.client.pipeline(transaction=False) as pipe:
            for c in checkpoints:
                pipe.set(
                    self.key(f"checkpoint:{c.key}"),
                    c.value,
                    px=max(1, int(c.ttl_s * 1000)) if c.ttl_s is not None else None,
                )
            await pipe.execute()
