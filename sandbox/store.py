"""The sandbox's in-memory store: leads and companies of one tenant, and the upsert rules.

Layout, and why it is columnar: a store of a million leads made of small Python objects
(one instance, one list per identifier...) makes every full garbage collection rescan
millions of containers, which showed up as the sandbox's biggest cost after validation.
So a record is an integer index into a few parallel lists, attributes are ``str -> str``
dicts (CPython never tracks those for garbage collection), identifiers are ``str`` values
(a ``tuple`` only for the rare second value of one field), ``tags`` are tuples, and links
are integers. Per-workspace attributes and connection levels live in tenant-level dicts
keyed by ``(workspace or sender, record index)``.

The rules are ``shared/API-CONTRACT.md``, "Matching and upsert semantics"; every
**(ours)** choice there is implemented in :meth:`Tenant.apply`.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

from destinations.outreach_magic import settings as s

UNKNOWN_LEAD_ID = "Value error: unified_lead_id matches no lead"
UNKNOWN_COMPANY_ID = "Value error: unified_company_id matches no company"
STATUS_KEYS: tuple[str, ...] = ("200", "429", "503", "500", "502", "413", "415", "400", "drop", "lost")

# (field, index name) pairs after the unified id, in matching priority
_LEAD_KEYS: tuple[str, ...] = s.LEAD_IDENTIFIERS[1:]
_COMPANY_KEYS: tuple[str, ...] = s.COMPANY_IDENTIFIERS[1:]
_LEAD_ATTRS = s.LEAD_ATTRIBUTES
_COMPANY_ATTRS = s.COMPANY_ATTRIBUTES
_WS_ATTRS = s.WORKSPACE_ATTRIBUTES

Idents = dict[str, "str | tuple[str, ...]"]
_MASK_96 = (1 << 96) - 1
_PLANS_MAX = 1024
_Fields = tuple[str, ...]
Plan = tuple[bool, _Fields, _Fields, bool, _Fields, _Fields, _Fields, bool, bool]


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


def _values(stored: str | tuple[str, ...]) -> list[str]:
    return [stored] if isinstance(stored, str) else list(stored)


def _add_ident(idents: Idents, field: str, value: str) -> None:
    old = idents.get(field)
    if old is None:
        idents[field] = value
    elif isinstance(old, str):
        idents[field] = (old, value)
    else:
        idents[field] = (*old, value)


class _Side:
    """One kind of record (leads or companies): ids, identifiers, attributes, indexes."""

    __slots__ = ("attrs", "base", "by_uid", "ident_fields", "idents", "index", "uids")

    def __init__(self, ident_fields: tuple[str, ...], base: int) -> None:
        self.ident_fields = ident_fields
        # Generated ids are ``base + index + 1`` in 24 hex digits (``base`` is random per
        # tenant, side and process): an id maps back to its index by arithmetic, so new
        # records need no id dict entry; ``by_uid`` holds only the ids that do not follow
        # the rule (restored from --db, or a rare clash with one of those).
        self.base = base
        self.uids: list[str] = []
        self.idents: list[Idents] = []
        self.attrs: list[dict[str, str]] = []
        self.by_uid: dict[str, int] = {}
        # one dict per identifier field: matching key -> record index
        self.index: dict[str, dict[str, int]] = {f: {} for f in ident_fields}

    def __len__(self) -> int:
        return len(self.uids)

    def create(self, uid: str | None = None, idents: Idents | None = None, attrs: dict[str, str] | None = None) -> int:
        """Append a record; ``uid=None`` generates its id."""
        idx = len(self.uids)
        if uid is None:
            uid = f"{(self.base + idx + 1) & _MASK_96:024x}"
            if self.by_uid and uid in self.by_uid:  # clashes with a restored id: draw another
                while uid in self.by_uid or self.find(uid) >= 0:
                    uid = f"{random.getrandbits(96):024x}"
                self.by_uid[uid] = idx
        elif self.find(uid) < 0:
            self.by_uid[uid] = idx
        self.uids.append(uid)
        self.idents.append({} if idents is None else idents)
        self.attrs.append({} if attrs is None else attrs)
        return idx

    def find(self, uid: str) -> int:
        """The index of the record with id ``uid``, or -1."""
        idx = self.by_uid.get(uid, -1)
        if idx < 0:
            n = (int(uid, 16) - self.base - 1) & _MASK_96
            if n < len(self.uids) and self.uids[n] == uid:
                return n
        return idx


def _key(field: str, value: str) -> str:
    """Emails match ignoring case (**ours**); every other identifier matches exactly as sent."""
    return value.lower() if field == "lead_email" else value


class Tenant:
    """Everything one API key sees: its records, its counters."""

    def __init__(self, tenant_id: str, rng: random.Random) -> None:
        self.tenant_id = tenant_id
        self._rng = rng
        self.leads = _Side(_LEAD_KEYS, rng.getrandbits(96))
        self.companies = _Side(_COMPANY_KEYS, rng.getrandbits(96))
        self._plans: dict[tuple[str, ...], Plan] = {}
        self.lead_company: list[int] = []  # lead index -> company index, -1 for none
        self.lead_ws: dict[tuple[str, int], dict[str, Any]] = {}
        self.company_ws: dict[tuple[str, int], dict[str, Any]] = {}
        self.connections: dict[tuple[str, int], str] = {}
        # every workspace id and sender seen (insertion-ordered sets), for per-record lookups
        self.workspace_ids: dict[str, None] = {}
        self.senders: dict[str, None] = {}
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
    def apply(self, ev: dict[str, Any]) -> str | None:
        """Upsert one *valid* event; return the ``value_error`` message when it cannot apply.

        An unknown ``unified_*_id`` that is the only identifier of its side fails the
        whole item before anything changes (**ours**: otherwise resending the event
        would create a second record); with other identifiers it is skipped.
        """
        if None in ev.values():  # null means "not provided" (ours): drop, then plan by keys
            ev = {k: v for k, v in ev.items() if v is not None}
        keys = tuple(ev)
        plan = self._plans.get(keys)
        if plan is None:
            if len(self._plans) >= _PLANS_MAX:
                self._plans.clear()
            plan = self._plans[keys] = _plan(keys)
        lead_uid_f, lead_ids, lead_attrs, co_uid_f, co_ids, co_attrs, ws_attrs, has_ws, has_sender = plan
        leads, companies = self.leads, self.companies
        lead_idx = company_idx = -1
        if lead_uid_f:
            lead_idx = leads.find(ev["unified_lead_id"])
            if lead_idx < 0 and not lead_ids:
                return UNKNOWN_LEAD_ID
        if co_uid_f:
            company_idx = companies.find(ev["unified_company_id"])
            if company_idx < 0 and not co_ids:
                return UNKNOWN_COMPANY_ID
        has_lead = lead_uid_f or bool(lead_ids)
        has_company = co_uid_f or bool(co_ids)

        if has_company:
            company_idx = self._upsert(companies, company_idx, co_ids, co_attrs, ev)
            if self.track_dirty:
                self.dirty_companies.add(company_idx)
        if has_lead:
            lead_idx = self._upsert(leads, lead_idx, lead_ids, lead_attrs, ev)
            if lead_idx == len(self.lead_company):
                self.lead_company.append(company_idx)
            elif company_idx >= 0:
                self.lead_company[lead_idx] = company_idx  # the last company named wins
            if self.track_dirty:
                self.dirty_leads.add(lead_idx)
            if has_sender:
                sender = ev["sender"]
                self.connections[(sender, lead_idx)] = ev["linkedin_connection_level"]
                if sender not in self.senders:
                    self.senders[sender] = None
        if has_ws:
            if has_lead:
                key, store = (ev["workspace_id"], lead_idx), self.lead_ws
            else:
                key, store = (ev["workspace_id"], company_idx), self.company_ws
            ws = store.get(key)
            if ws is None:
                ws = store[key] = {}
                self.workspace_ids[key[0]] = None
            for f in ws_attrs:
                ws[f] = tuple(ev[f]) if f == "tags" else ev[f]  # tags replace the stored list
        return None

    def _upsert(
        self, side: _Side, idx: int, id_fields: tuple[str, ...], attr_fields: tuple[str, ...], ev: dict[str, Any]
    ) -> int:
        """Match by priority (``idx`` is the unified id's match, or -1), attach, set attributes."""
        index = side.index
        if len(id_fields) == 1:  # the common case, without the general path's pairs
            f = id_fields[0]
            value = ev[f]
            k = value.lower() if f == "lead_email" else value
            by = index[f]
            if idx < 0:
                idx = by.get(k, -1)
                if idx < 0:
                    idx = len(side.uids)
                    by[k] = idx
                    return side.create(None, {f: value}, {a: ev[a] for a in attr_fields})
            if k not in by:
                by[k] = idx
                _add_ident(side.idents[idx], f, value)
            if attr_fields:
                attrs = side.attrs[idx]
                for a in attr_fields:
                    attrs[a] = ev[a]
            return idx
        matched = [(f, ev[f].lower() if f == "lead_email" else ev[f]) for f in id_fields]
        if idx < 0:
            for f, k in matched:
                idx = index[f].get(k, -1)
                if idx >= 0:
                    break
        if idx < 0:  # a new record: build its dicts in one go (the insert path is hot)
            idx = len(side.uids)
            idents: Idents = {}
            for f, k in matched:
                by = index[f]
                if k not in by:
                    by[k] = idx
                    idents[f] = ev[f]
            return side.create(None, idents, {f: ev[f] for f in attr_fields})
        idents = side.idents[idx]
        for f, k in matched:
            by = index[f]
            if k not in by:  # an identifier already on another record stays there (ours)
                by[k] = idx
                _add_ident(idents, f, ev[f])
        if attr_fields:
            attrs = side.attrs[idx]
            for f in attr_fields:
                attrs[f] = ev[f]
        return idx

    # ---------------------------------------------------------------- views
    def lead_doc(
        self, idx: int, ws: dict[str, dict[str, Any]] | None = None, conns: dict[str, str] | None = None
    ) -> dict[str, Any]:
        idents = self.leads.idents[idx]
        company = self.lead_company[idx]
        return {
            "unified_lead_id": self.leads.uids[idx],
            "identifiers": {f: _values(idents[f]) if f in idents else [] for f in _LEAD_KEYS},
            "attributes": dict(self.leads.attrs[idx]),
            "unified_company_id": self.companies.uids[company] if company >= 0 else None,
            "workspaces": ws if ws is not None else self._workspaces(self.lead_ws, idx),
            "connections": conns
            if conns is not None
            else {sender: level for (sender, i), level in self.connections.items() if i == idx},
        }

    def company_doc(self, idx: int, ws: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
        idents = self.companies.idents[idx]
        return {
            "unified_company_id": self.companies.uids[idx],
            "identifiers": {f: _values(idents[f]) if f in idents else [] for f in _COMPANY_KEYS},
            "attributes": dict(self.companies.attrs[idx]),
            "workspaces": ws if ws is not None else self._workspaces(self.company_ws, idx),
        }

    @staticmethod
    def _workspaces(store: dict[tuple[str, int], dict[str, Any]], idx: int) -> dict[str, dict[str, Any]]:
        return {w: _ws_view(attrs) for (w, i), attrs in store.items() if i == idx}

    def _few(self, only: set[int] | None, scanned: int) -> bool:
        """Whether looking ``only`` up by every known workspace and sender beats one full scan
        (the persistence thread writes a few changed records of a large store)."""
        return only is not None and (len(self.workspace_ids) + len(self.senders)) * len(only) < scanned

    def lead_docs(self, only: set[int] | None = None) -> Iterator[dict[str, Any]]:
        """Every lead (or those in ``only``) in creation order, in the inspection shape."""
        if only is not None and self._few(only, len(self.lead_ws) + len(self.connections)):
            lead_ws, connections = self.lead_ws, self.connections
            for idx in sorted(only):
                yield self.lead_doc(
                    idx,
                    {w: _ws_view(a) for w in self.workspace_ids if (a := lead_ws.get((w, idx))) is not None},
                    {s: c for s in self.senders if (c := connections.get((s, idx))) is not None},
                )
            return
        ws: dict[int, dict[str, dict[str, Any]]] = {}
        for (w, i), attrs in self.lead_ws.items():
            if only is None or i in only:
                ws.setdefault(i, {})[w] = _ws_view(attrs)
        conns: dict[int, dict[str, str]] = {}
        for (sender, i), level in self.connections.items():
            if only is None or i in only:
                conns.setdefault(i, {})[sender] = level
        indexes = range(len(self.leads)) if only is None else sorted(only)
        for idx in indexes:
            yield self.lead_doc(idx, ws.get(idx, {}), conns.get(idx, {}))

    def company_docs(self, only: set[int] | None = None) -> Iterator[dict[str, Any]]:
        if only is not None and self._few(only, len(self.company_ws)):
            company_ws = self.company_ws
            for idx in sorted(only):
                yield self.company_doc(
                    idx, {w: _ws_view(a) for w in self.workspace_ids if (a := company_ws.get((w, idx))) is not None}
                )
            return
        ws: dict[int, dict[str, dict[str, Any]]] = {}
        for (w, i), attrs in self.company_ws.items():
            if only is None or i in only:
                ws.setdefault(i, {})[w] = _ws_view(attrs)
        indexes = range(len(self.companies)) if only is None else sorted(only)
        for idx in indexes:
            yield self.company_doc(idx, ws.get(idx, {}))

    # ------------------------------------------------------------- restore
    def restore(self, companies: list[dict[str, Any]], leads: list[dict[str, Any]]) -> None:
        """Rebuild from inspection-shaped documents (what :mod:`sandbox.persist` saved)."""
        for doc in companies:
            idx = self._restore_record(self.companies, _COMPANY_KEYS, doc, "unified_company_id")
            for w, attrs in doc.get("workspaces", {}).items():
                self.company_ws[(w, idx)] = _ws_store(attrs)
                self.workspace_ids[w] = None
        for doc in leads:
            idx = self._restore_record(self.leads, _LEAD_KEYS, doc, "unified_lead_id")
            company = doc.get("unified_company_id")
            self.lead_company.append(self.companies.find(company) if company else -1)
            for w, attrs in doc.get("workspaces", {}).items():
                self.lead_ws[(w, idx)] = _ws_store(attrs)
                self.workspace_ids[w] = None
            for sender, level in doc.get("connections", {}).items():
                self.connections[(sender, idx)] = level
                self.senders[sender] = None

    @staticmethod
    def _restore_record(side: _Side, keys: tuple[str, ...], doc: dict[str, Any], uid_field: str) -> int:
        idx = side.create(doc[uid_field])
        idents = side.idents[idx]
        for f in keys:
            for value in doc.get("identifiers", {}).get(f, []):
                side.index[f].setdefault(_key(f, value), idx)
                _add_ident(idents, f, value)
        side.attrs[idx].update(doc.get("attributes", {}))
        return idx


def _ws_view(attrs: dict[str, Any]) -> dict[str, Any]:
    return {k: list(v) if k == "tags" else v for k, v in attrs.items()}


def _ws_store(attrs: dict[str, Any]) -> dict[str, Any]:
    return {k: tuple(v) if k == "tags" else v for k, v in attrs.items()}
