"""The sandbox's in-memory store: leads and companies of one tenant, and the upsert rules.

Layout, and why it is columnar: the sandbox must ingest 100,000 events a second on two
shared cores, so per event it can afford a few microseconds. A record is an integer index;
every identifier field, attribute and workspace attribute is a ``list`` indexed by record
(``None`` where a record has no value; lists grow only when written), one list per field,
not one container per record. That buys two things:

* a run of similar events is applied with a handful of C-level calls per field instead
  of a Python loop per event (:meth:`Tenant.apply_many`): new records are appended with
  ``list.extend``, existing ones set through ``map(list.__setitem__, ...)``;
* the store holds a few dozen big lists of strings, which CPython's garbage collector
  walks cheaply (a store made of millions of small containers made every full
  collection walk all of them).

Generated ids follow ``base + index + 1`` (in 24 hex digits, ``base`` random per tenant,
side and process), so an id maps back to its record by arithmetic and new records need no
id string at all until someone looks; only ids that break the rule (restored from
``--db``, or a rare clash with one of those) are kept in ``custom``/``by_uid``.

The rules are ``shared/API-CONTRACT.md``, "Matching and upsert semantics"; every
**(ours)** choice there is implemented in :meth:`Tenant.apply`, the reference path.
:meth:`Tenant.apply_many` takes the bulk path only where it provably ends in the same
state as applying the events one by one (``tests/test_sandbox_store.py`` compares both).
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from itertools import compress, count, groupby, repeat
from operator import is_, itemgetter, setitem
from typing import Any

from destinations.outreach_magic import settings as s
from destinations.outreach_magic.contract import Verdicts

UNKNOWN_LEAD_ID = "Value error: unified_lead_id matches no lead"
UNKNOWN_COMPANY_ID = "Value error: unified_company_id matches no company"
STATUS_KEYS: tuple[str, ...] = ("200", "429", "503", "500", "502", "413", "415", "400", "drop", "lost")

# identifier fields after the unified id, in matching priority
_LEAD_KEYS: tuple[str, ...] = s.LEAD_IDENTIFIERS[1:]
_COMPANY_KEYS: tuple[str, ...] = s.COMPANY_IDENTIFIERS[1:]
_LEAD_ATTRS = s.LEAD_ATTRIBUTES
_COMPANY_ATTRS = s.COMPANY_ATTRIBUTES
_WS_ATTRS = s.WORKSPACE_ATTRIBUTES
_EMAIL = "lead_email"
_MASK_96 = (1 << 96) - 1
_PLANS_MAX = 1024
_BULK_MIN = 8  # shorter runs cost less event by event than setting the bulk path up
_MEMBER = ""  # a workspace's column of the records it touched, with or without attributes
_ABSENT: Any = object()

_Fields = tuple[str, ...]
Plan = tuple[bool, _Fields, _Fields, bool, _Fields, _Fields, _Fields, bool, bool]
Column = list[Any]  # record index -> value, None for none; shorter than the side when unwritten
WsColumns = dict[str, Column]  # workspace field -> column ("" lists the records it touched)


class _Columns:
    """A run of events field by field: each column taken once (or handed over by the
    validator, which already took them for the same events)."""

    __slots__ = ("cache", "run")

    def __init__(self, run: list[dict[str, Any]], cache: dict[str, Sequence[Any]] | None = None) -> None:
        self.run = run
        self.cache = {} if cache is None else cache

    def __len__(self) -> int:
        return len(self.run)

    def __call__(self, field: str) -> Sequence[Any]:
        col = self.cache.get(field)
        if col is None:
            col = self.cache[field] = list(map(itemgetter(field), self.run))
        return col


def _grow(col: Column, n: int) -> None:
    if len(col) < n:
        col.extend(repeat(None, n - len(col)))


def _put(col: Column, idx: int, value: Any) -> None:
    if idx >= len(col):
        col.extend(repeat(None, idx + 1 - len(col)))
    col[idx] = value


def _get(col: Column, idx: int) -> Any:
    return col[idx] if idx < len(col) else None


def _write(col: Column, idxs: Sequence[int], values: Iterable[Any], lo: int) -> None:
    """``col[idxs[k]] = values[k]`` in order. ``lo >= 0`` says that ``idxs`` is
    ``range(lo, lo + len(idxs))``: then it is one append or one slice assignment."""
    if lo >= 0:
        _grow(col, lo)
        if len(col) == lo:
            col.extend(values)
        else:
            hi = lo + len(idxs)
            _grow(col, hi)
            col[lo:hi] = values
    else:
        _grow(col, max(idxs) + 1)
        deque(map(setitem, repeat(col), idxs, values), maxlen=0)


def _span(idxs: Sequence[int]) -> int:
    """The first index when ``idxs`` is an ascending run of consecutive indexes, else -1
    (a run of updates to records created together usually is one)."""
    if not idxs:
        return -1
    lo = idxs[0]
    hi = lo + len(idxs)
    return lo if idxs[-1] == hi - 1 and (isinstance(idxs, range) or idxs == list(range(lo, hi))) else -1


def _plan(keys: tuple[str, ...]) -> Plan:
    """What an event with exactly these (non-null) keys touches, fields in priority order.

    Events of one sync share a few key sets, so this runs once per key set, not per event.
    """
    present = set(keys)
    return (
        "unified_lead_id" in present,
        tuple(f for f in _LEAD_KEYS if f in present),
        tuple(f for f in _LEAD_ATTRS if f in present),
        "unified_company_id" in present,
        tuple(f for f in _COMPANY_KEYS if f in present),
        tuple(f for f in _COMPANY_ATTRS if f in present),
        tuple(f for f in _WS_ATTRS if f in present),
        "workspace_id" in present,
        "sender" in present,
    )


def _key(field: str, value: str) -> str:
    """Emails match ignoring case (**ours**); every other identifier matches exactly as sent."""
    return value.lower() if field == _EMAIL else value


class _Side:
    """One kind of record (leads or companies), one column per field."""

    __slots__ = ("attrs", "base", "by_uid", "custom", "extra", "idents", "index", "n")

    def __init__(self, ident_fields: tuple[str, ...], attr_fields: tuple[str, ...], base: int) -> None:
        self.base = base
        self.n = 0
        self.custom: dict[int, str] = {}  # record index -> id, for ids off the rule
        self.by_uid: dict[str, int] = {}  # the reverse of ``custom``
        self.index: dict[str, dict[str, int]] = {f: {} for f in ident_fields}  # matching key -> index
        self.idents: dict[str, Column] = {f: [] for f in ident_fields}  # first value of a field
        self.extra: dict[str, dict[int, tuple[str, ...]]] = {f: {} for f in ident_fields}  # further values (rare)
        self.attrs: dict[str, Column] = {f: [] for f in attr_fields}

    def __len__(self) -> int:
        return self.n

    def _rule(self, idx: int) -> str:
        return f"{(self.base + idx + 1) & _MASK_96:024x}"

    def uid(self, idx: int) -> str:
        custom = self.custom.get(idx) if self.custom else None
        return custom if custom is not None else self._rule(idx)

    @property
    def uids(self) -> list[str]:
        return [self.uid(i) for i in range(self.n)]

    def find(self, uid: str) -> int:
        """The index of the record with id ``uid`` (24 hex digits), or -1."""
        idx = self.by_uid.get(uid, -1)
        if idx < 0:
            n = (int(uid, 16) - self.base - 1) & _MASK_96
            if n < self.n and n not in self.custom:
                return n
        return idx

    def create(self, uid: str | None = None) -> int:
        """A new empty record; ``uid=None`` gives it the rule's id."""
        idx = self.n
        self.n = idx + 1
        if uid is None:
            if self.by_uid:
                self._avoid_clash(idx)
        elif uid != self._rule(idx):
            self.custom[idx] = uid
            if self.by_uid.get(uid, -1) < 0:
                self.by_uid[uid] = idx
        return idx

    def create_many(self, m: int) -> int:
        """``m`` new records with the rule's ids; returns the first index."""
        start = self.n
        self.n = start + m
        if self.by_uid:  # only ids restored from --db can clash with the rule
            for idx in range(start, start + m):
                self._avoid_clash(idx)
        return start

    def _avoid_clash(self, idx: int) -> None:
        uid = self._rule(idx)
        if uid in self.by_uid:
            while uid in self.by_uid or self.find(uid) >= 0:
                uid = f"{random.getrandbits(96):024x}"
            self.custom[idx] = uid
            self.by_uid[uid] = idx

    def add_ident(self, field: str, idx: int, value: str) -> None:
        first = self.idents[field]
        if _get(first, idx) is None:
            _put(first, idx, value)
        else:
            extra = self.extra[field]
            extra[idx] = (*extra.get(idx, ()), value)

    def identifiers(self, idx: int) -> dict[str, list[str]]:
        return {
            f: [value, *self.extra[f].get(idx, ())] if (value := _get(first, idx)) is not None else []
            for f, first in self.idents.items()
        }

    def attributes(self, idx: int) -> dict[str, str]:
        return {f: v for f, col in self.attrs.items() if (v := _get(col, idx)) is not None}

    # ------------------------------------------------------------ upserts
    def upsert(self, idx: int, id_fields: _Fields, attr_fields: _Fields, ev: dict[str, Any]) -> int:
        """One event: match by priority (``idx`` is the unified id's match, or -1), attach, set."""
        index = self.index
        keyed = [(f, ev[f], _key(f, ev[f])) for f in id_fields]
        if idx < 0:
            for f, _, k in keyed:
                idx = index[f].get(k, -1)
                if idx >= 0:
                    break
            else:
                idx = self.create()
        for f, value, k in keyed:
            by = index[f]
            if k not in by:  # an identifier already on another record stays there (ours)
                by[k] = idx
                self.add_ident(f, idx, value)
        attrs = self.attrs
        for f in attr_fields:
            _put(attrs[f], idx, ev[f])
        return idx

    def upsert_run(self, id_fields: _Fields, attr_fields: _Fields, run: _Columns) -> tuple[Sequence[int], int]:
        """A run of events with the same fields, in bulk: the record index of each event,
        and the first of them when they are consecutive (see :func:`_write`), else -1.

        With several identifier fields, the caller must first check that no key repeats
        within the run (:func:`_distinct_per_field`): otherwise event *j* could match
        through a record event *i* created or extended, which only the one-by-one path
        gets right. With one identifier field, repeats are fine: the first occurrence
        creates the record and the later ones match it, as ``dict.fromkeys`` and
        ``dict.update`` reproduce.
        """
        index = self.index
        if len(id_fields) == 1:
            f = id_fields[0]
            vals: Sequence[str] = run(f)
            keys: Sequence[str] = list(map(str.lower, vals)) if f == _EMAIL else vals
            by = index[f]
            found = list(map(by.get, keys))
            idxs: Sequence[int]
            if found.count(None):
                new = dict.fromkeys(compress(keys, map(is_, found, repeat(None))))
                start = self.create_many(len(new))
                by.update(zip(new, count(start)))
                # every event a new record, in order: a range; else look the indexes up
                idxs = range(start, self.n) if len(new) == len(run) else list(map(by.__getitem__, keys))
                first = self.idents[f]
                _grow(first, start)
                if keys is vals:
                    first.extend(new)
                else:  # the first occurrence's spelling, as one-by-one would keep
                    spelled = dict(zip(reversed(keys), reversed(vals), strict=True))
                    first.extend(map(spelled.__getitem__, new))
            else:
                idxs = found  # type: ignore[assignment]
        else:
            columns = [run(f) for f in id_fields]
            keyss = [list(map(str.lower, c)) if f == _EMAIL else c for f, c in zip(id_fields, columns, strict=True)]
            # Every key is distinct per field (the caller checked): no event's lookups can see
            # another event's changes, so match everything against the store before the run.
            founds = [list(map(index[f].get, keys)) for f, keys in zip(id_fields, keyss, strict=True)]
            matched = founds[0]
            for later in founds[1:]:
                matched = [a if a is not None else b for a, b in zip(matched, later, strict=True)]
            created = matched.count(None)
            if created == len(run):  # every event a new record, in order
                start = self.create_many(created)
                idxs = range(start, self.n)
                for f, keys, vals in zip(id_fields, keyss, columns, strict=True):
                    index[f].update(zip(keys, idxs, strict=True))
                    _write(self.idents[f], idxs, vals, start)
            else:
                if created:
                    nums = count(self.create_many(created))
                    matched = [next(nums) if a is None else a for a in matched]
                idxs = matched  # type: ignore[assignment]
                for f, keys, vals, found in zip(id_fields, keyss, columns, founds, strict=True):
                    if not found.count(None):
                        continue
                    by = index[f]
                    for k, value, hit, idx in zip(keys, vals, found, idxs, strict=True):
                        if hit is None:  # new records get all their identifiers; old ones the unknown
                            by[k] = idx
                            self.add_ident(f, idx, value)
        lo = _span(idxs)
        attrs = self.attrs
        for a in attr_fields:
            _write(attrs[a], idxs, run(a), lo)
        return idxs, lo


class Tenant:
    """Everything one API key sees: its records, its counters."""

    def __init__(self, tenant_id: str, rng: random.Random) -> None:
        self.tenant_id = tenant_id
        self._rng = rng
        self.leads = _Side(_LEAD_KEYS, _LEAD_ATTRS, rng.getrandbits(96))
        self.companies = _Side(_COMPANY_KEYS, _COMPANY_ATTRS, rng.getrandbits(96))
        self._plans: dict[tuple[str, ...], Plan] = {}
        self.lead_company: Column = []  # lead index -> company index (the last named) or None
        self.lead_ws: dict[str, WsColumns] = {}  # workspace id -> its columns
        self.company_ws: dict[str, WsColumns] = {}
        self.connections: dict[str, dict[int, str]] = {}  # sender -> lead index -> level
        self.dirty_leads: set[int] = set()
        self.dirty_companies: set[int] = set()
        self.track_dirty = False
        self.reset_counters()

    # ----------------------------------------------------------------- counters
    def reset_counters(self) -> None:
        self.requests = 0
        self.events_received = 0
        self.events_applied = 0
        self.events_rejected = 0
        self.status_counts: dict[str, int] = dict.fromkeys(STATUS_KEYS, 0)

    def count_status(self, status: str) -> None:
        self.status_counts[status] = self.status_counts.get(status, 0) + 1

    def stats(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "events_received": self.events_received,
            "events_applied": self.events_applied,
            "events_rejected": self.events_rejected,
            "status_counts": dict(self.status_counts),
        }

    def clear(self) -> None:
        """Empty the data and the counters (``POST /_sandbox/reset``)."""
        track = self.track_dirty
        self.__init__(self.tenant_id, self._rng)  # type: ignore[misc]
        self.track_dirty = track

    # ------------------------------------------------------------------ upsert
    def _plan_of(self, keys: tuple[str, ...]) -> Plan:
        plan = self._plans.get(keys)
        if plan is None:
            if len(self._plans) >= _PLANS_MAX:
                self._plans.clear()
            plan = self._plans[keys] = _plan(keys)
        return plan

    def apply(self, ev: dict[str, Any]) -> str | None:
        """Upsert one *valid* event; return the ``value_error`` message when it cannot apply.

        An unknown ``unified_*_id`` that is the only identifier of its side fails the
        whole item before anything changes (**ours**: otherwise resending the event
        would create a second record); with other identifiers it is skipped.
        """
        if None in ev.values():  # null means "not provided" (ours): drop, then plan by keys
            ev = {k: v for k, v in ev.items() if v is not None}
        lead_uid_f, lead_ids, lead_attrs, co_uid_f, co_ids, co_attrs, ws_attrs, has_ws, has_sender = self._plan_of(
            tuple(ev)
        )
        lead_idx = company_idx = -1
        if lead_uid_f:
            lead_idx = self.leads.find(ev["unified_lead_id"])
            if lead_idx < 0 and not lead_ids:
                return UNKNOWN_LEAD_ID
        if co_uid_f:
            company_idx = self.companies.find(ev["unified_company_id"])
            if company_idx < 0 and not co_ids:
                return UNKNOWN_COMPANY_ID
        has_lead = lead_uid_f or bool(lead_ids)
        if co_uid_f or co_ids:
            company_idx = self.companies.upsert(company_idx, co_ids, co_attrs, ev)
            if self.track_dirty:
                self.dirty_companies.add(company_idx)
        if has_lead:
            lead_idx = self.leads.upsert(lead_idx, lead_ids, lead_attrs, ev)
            if company_idx >= 0:
                _put(self.lead_company, lead_idx, company_idx)  # the last company named wins
            if self.track_dirty:
                self.dirty_leads.add(lead_idx)
            if has_sender:
                self.connections.setdefault(ev["sender"], {})[lead_idx] = ev["linkedin_connection_level"]
        if has_ws:
            cols = _ws_columns(self.lead_ws if has_lead else self.company_ws, ev["workspace_id"])
            idx = lead_idx if has_lead else company_idx
            _put(cols[_MEMBER], idx, True)
            for f in ws_attrs:
                _put(cols.setdefault(f, []), idx, tuple(ev[f]) if f == "tags" else ev[f])  # tags replace the list
        return None

    def apply_many(self, items: Sequence[Any], verdicts: Verdicts) -> list[tuple[int, str]]:
        """Apply the valid items in array order; return ``(index, message)`` of those that fail.

        ``verdicts`` is the validator's (:func:`~destinations.outreach_magic.contract.fast_verdicts`),
        its ``valid`` completed by the model: ``plain`` holds the key tuples whose items are
        plain strings, all valid (no null, no list), ``keys`` each item's key tuple, and
        ``columns`` the values of a batch that is one plain group, field by field.
        Consecutive runs of plain items with one key tuple and no unified id take the bulk
        path; everything else goes through :meth:`apply`.
        """
        valid, plain, keys, columns = verdicts
        failed: list[tuple[int, str]] = []
        for shape, group in groupby(range(len(items)), keys.__getitem__):
            indexes = list(group)
            if (
                shape is not None
                and len(indexes) >= _BULK_MIN
                and shape in plain
                and all(map(valid.__getitem__, indexes))
            ):
                plan = self._plan_of(shape)
                whole = len(indexes) == len(items)  # then the validator's columns are this run's
                run = _Columns(list(items) if whole else [items[i] for i in indexes], columns if whole else None)
                if not plan[0] and not plan[3] and self._apply_run(plan, run):
                    continue
            for i in indexes:
                if valid[i]:
                    message = self.apply(items[i])
                    if message is not None:
                        failed.append((i, message))
        return failed

    def _apply_run(self, plan: Plan, run: _Columns) -> bool:
        """The bulk path for a run of plain, valid events with one key tuple and no unified id.

        Leads and companies are separate structures, so all company upserts of the run
        then all lead upserts end as the event-by-event order does. False (nothing
        changed) when a side cannot go in bulk and the run must go event by event.
        """
        _, lead_ids, lead_attrs, _, co_ids, co_attrs, ws_attrs, has_ws, has_sender = plan
        leads, companies = self.leads, self.companies
        # Decide before changing anything whether the run can go in bulk.
        if "tags" in ws_attrs:  # stored as tuples; the validator never calls such runs plain anyway
            return False
        if len(lead_ids) > 1 and not _distinct_per_field(lead_ids, run):
            return False
        if len(co_ids) > 1 and not _distinct_per_field(co_ids, run):
            return False
        company_idxs = lead_idxs = None
        company_lo = lead_lo = -1
        if co_ids:
            company_idxs, company_lo = companies.upsert_run(co_ids, co_attrs, run)
            if self.track_dirty:
                self.dirty_companies.update(company_idxs)
        if lead_ids:
            lead_idxs, lead_lo = leads.upsert_run(lead_ids, lead_attrs, run)
            if company_idxs is not None:
                _write(self.lead_company, lead_idxs, company_idxs, lead_lo)
            if self.track_dirty:
                self.dirty_leads.update(lead_idxs)
            if has_sender:
                connections = self.connections
                for sender, idx, level in zip(
                    run("sender"),
                    lead_idxs,
                    run("linkedin_connection_level"),
                    strict=True,
                ):
                    connections.setdefault(sender, {})[idx] = level
        if has_ws:
            if lead_idxs is not None:
                idxs, lo, store = lead_idxs, lead_lo, self.lead_ws
            else:
                assert company_idxs is not None  # the validator's identifier rule
                idxs, lo, store = company_idxs, company_lo, self.company_ws
            workspaces = run("workspace_id")
            if workspaces.count(workspaces[0]) == len(workspaces):
                cols = _ws_columns(store, workspaces[0])
                _write(cols[_MEMBER], idxs, repeat(True, len(idxs)), lo)
                for f in ws_attrs:
                    _write(cols.setdefault(f, []), idxs, run(f), lo)
            else:
                for ev, w, idx in zip(run.run, workspaces, idxs, strict=True):
                    cols = _ws_columns(store, w)
                    _put(cols[_MEMBER], idx, True)
                    for f in ws_attrs:
                        _put(cols.setdefault(f, []), idx, ev[f])
        return True

    # ---------------------------------------------------------------- views
    def lead_doc(self, idx: int) -> dict[str, Any]:
        company = _get(self.lead_company, idx)
        return {
            "unified_lead_id": self.leads.uid(idx),
            "identifiers": self.leads.identifiers(idx),
            "attributes": self.leads.attributes(idx),
            "unified_company_id": self.companies.uid(company) if company is not None else None,
            "workspaces": _workspaces(self.lead_ws, idx),
            "connections": {
                sender: level
                for sender, col in self.connections.items()
                if (level := col.get(idx, _ABSENT)) is not _ABSENT
            },
        }

    def company_doc(self, idx: int) -> dict[str, Any]:
        return {
            "unified_company_id": self.companies.uid(idx),
            "identifiers": self.companies.identifiers(idx),
            "attributes": self.companies.attributes(idx),
            "workspaces": _workspaces(self.company_ws, idx),
        }

    def lead_docs(self, only: set[int] | None = None) -> Iterator[dict[str, Any]]:
        """Every lead (or those in ``only``) in creation order, in the inspection shape."""
        for idx in range(self.leads.n) if only is None else sorted(only):
            yield self.lead_doc(idx)

    def company_docs(self, only: set[int] | None = None) -> Iterator[dict[str, Any]]:
        for idx in range(self.companies.n) if only is None else sorted(only):
            yield self.company_doc(idx)

    # ------------------------------------------------------------- restore
    def restore(self, companies: list[dict[str, Any]], leads: list[dict[str, Any]]) -> None:
        """Rebuild from inspection-shaped documents (what :mod:`sandbox.persist` saved)."""
        for doc in companies:
            idx = _restore_record(self.companies, doc, "unified_company_id")
            for w, attrs in doc.get("workspaces", {}).items():
                _restore_ws(self.company_ws, w, idx, attrs)
        for doc in leads:
            idx = _restore_record(self.leads, doc, "unified_lead_id")
            company = doc.get("unified_company_id")
            if company:
                found = self.companies.find(company)
                if found >= 0:
                    _put(self.lead_company, idx, found)
            for w, attrs in doc.get("workspaces", {}).items():
                _restore_ws(self.lead_ws, w, idx, attrs)
            for sender, level in doc.get("connections", {}).items():
                self.connections.setdefault(sender, {})[idx] = level


def _distinct_per_field(fields: _Fields, run: _Columns) -> bool:
    n = len(run)
    for f in fields:
        values = run(f)
        if len(set(map(str.lower, values) if f == _EMAIL else values)) != n:
            return False
    return True


def _ws_columns(store: dict[str, WsColumns], workspace: str) -> WsColumns:
    cols = store.get(workspace)
    if cols is None:
        cols = store[workspace] = {_MEMBER: []}
    return cols


def _workspaces(store: dict[str, WsColumns], idx: int) -> dict[str, dict[str, Any]]:
    return {
        w: {
            f: list(v) if f == "tags" else v
            for f, col in cols.items()
            if f != _MEMBER and (v := _get(col, idx)) is not None
        }
        for w, cols in store.items()
        if _get(cols[_MEMBER], idx)
    }


def _restore_record(side: _Side, doc: dict[str, Any], uid_field: str) -> int:
    idx = side.create(doc[uid_field])
    identifiers = doc.get("identifiers", {})
    for f in side.index:
        for value in identifiers.get(f, []):
            side.index[f].setdefault(_key(f, value), idx)
            side.add_ident(f, idx, value)
    for f, value in doc.get("attributes", {}).items():
        _put(side.attrs.setdefault(f, []), idx, value)
    return idx


def _restore_ws(store: dict[str, WsColumns], workspace: str, idx: int, attrs: dict[str, Any]) -> None:
    cols = _ws_columns(store, workspace)
    _put(cols[_MEMBER], idx, True)
    for f, v in attrs.items():
        _put(cols.setdefault(f, []), idx, tuple(v) if f == "tags" else v)
