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

    __slots__ = ("attrs", "by_uid", "ident_fields", "idents", "index", "uids")

    def __init__(self, ident_fields: tuple[str, ...]) -> None:
        self.ident_fields = ident_fields
        self.uids: list[str] = []
        self.idents: list[Idents] = []
        self.attrs: list[dict[str, str]] = []
        self.by_uid: dict[str, int] = {}
        # one dict per identifier field: matching key -> record index
        self.index: dict[str, dict[str, int]] = {f: {} for f in ident_fields}

    def __len__(self) -> int:
        return len(self.uids)

    def create(self, uid: str) -> int:
        idx = len(self.uids)
        self.uids.append(uid)
        self.idents.append({})
        self.attrs.append({})
        self.by_uid[uid] = idx
        return idx


def _key(field: str, value: str) -> str:
    """Emails match ignoring case (**ours**); every other identifier matches exactly as sent."""
    return value.lower() if field == "lead_email" else value


class Tenant:
    """Everything one API key sees: its records, its counters."""

    def __init__(self, tenant_id: str, rng: random.Random) -> None:
        self.tenant_id = tenant_id
        self._rng = rng
        self.leads = _Side(_LEAD_KEYS)
        self.companies = _Side(_COMPANY_KEYS)
        self.lead_company: list[int] = []  # lead index -> company index, -1 for none
        self.lead_ws: dict[tuple[str, int], dict[str, Any]] = {}
        self.company_ws: dict[tuple[str, int], dict[str, Any]] = {}
        self.connections: dict[tuple[str, int], str] = {}
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

    # --------------------------------------------------------------------- ids
    def _new_uid(self, side: _Side) -> str:
        while True:
            uid = f"{self._rng.getrandbits(96):024x}"
            if uid not in side.by_uid:
                return uid

    # ------------------------------------------------------------------ upsert
    def apply(self, ev: dict[str, Any]) -> str | None:
        """Upsert one *valid* event; return the ``value_error`` message when it cannot apply.

        An unknown ``unified_*_id`` that is the only identifier of its side fails the
        whole item before anything changes (**ours**: otherwise resending the event
        would create a second record); with other identifiers it is skipped.
        """
        get = ev.get
        leads, companies = self.leads, self.companies
        lead_uid = get("unified_lead_id")
        lead_idx = -1
        has_lead = lead_uid is not None
        if has_lead:
            lead_idx = leads.by_uid.get(lead_uid, -1)  # type: ignore[arg-type]
        else:
            for f in _LEAD_KEYS:
                if get(f) is not None:
                    has_lead = True
                    break
        company_uid = get("unified_company_id")
        company_idx = -1
        has_company = company_uid is not None
        if has_company:
            company_idx = companies.by_uid.get(company_uid, -1)  # type: ignore[arg-type]
        else:
            for f in _COMPANY_KEYS:
                if get(f) is not None:
                    has_company = True
                    break
        if lead_uid is not None and lead_idx < 0 and all(get(f) is None for f in _LEAD_KEYS):
            return UNKNOWN_LEAD_ID
        if company_uid is not None and company_idx < 0 and all(get(f) is None for f in _COMPANY_KEYS):
            return UNKNOWN_COMPANY_ID

        if has_company:
            company_idx = self._upsert(companies, company_idx, _COMPANY_KEYS, _COMPANY_ATTRS, ev)
            if self.track_dirty:
                self.dirty_companies.add(company_idx)
        if has_lead:
            lead_idx = self._upsert(leads, lead_idx, _LEAD_KEYS, _LEAD_ATTRS, ev)
            if lead_idx == len(self.lead_company):
                self.lead_company.append(-1)
            if company_idx >= 0:
                self.lead_company[lead_idx] = company_idx  # the last company named wins
            if self.track_dirty:
                self.dirty_leads.add(lead_idx)
            sender = get("sender")
            if sender is not None:
                self.connections[(sender, lead_idx)] = ev["linkedin_connection_level"]

        workspace = get("workspace_id")
        if workspace is not None:
            if has_lead:
                key, store = (workspace, lead_idx), self.lead_ws
            else:
                key, store = (workspace, company_idx), self.company_ws
            ws = store.get(key)
            if ws is None:
                ws = store[key] = {}
            for f in _WS_ATTRS:
                value = get(f)
                if value is not None:
                    ws[f] = tuple(value) if f == "tags" else value  # tags replace the stored list
        return None

    def _upsert(
        self, side: _Side, idx: int, keys: tuple[str, ...], attr_fields: tuple[str, ...], ev: dict[str, Any]
    ) -> int:
        """Match by priority (``idx`` is the unified id's match, or -1), attach, set attributes."""
        get = ev.get
        index = side.index
        if idx < 0:
            for f in keys:
                value = get(f)
                if value is not None:
                    found = index[f].get(_key(f, value), -1)
                    if found >= 0:
                        idx = found
                        break
        if idx < 0:
            idx = side.create(self._new_uid(side))
        idents = side.idents[idx]
        for f in keys:
            value = get(f)
            if value is not None:
                k = _key(f, value)
                by = index[f]
                if k not in by:  # an identifier already on another record stays there (ours)
                    by[k] = idx
                    _add_ident(idents, f, value)
        attrs = side.attrs[idx]
        for f in attr_fields:
            value = get(f)
            if value is not None:  # null never clears (ours)
                attrs[f] = value
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

    def lead_docs(self, only: set[int] | None = None) -> Iterator[dict[str, Any]]:
        """Every lead (or those in ``only``) in creation order, in the inspection shape."""
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
        for doc in leads:
            idx = self._restore_record(self.leads, _LEAD_KEYS, doc, "unified_lead_id")
            company = doc.get("unified_company_id")
            self.lead_company.append(self.companies.by_uid.get(company, -1) if company else -1)
            for w, attrs in doc.get("workspaces", {}).items():
                self.lead_ws[(w, idx)] = _ws_store(attrs)
            for sender, level in doc.get("connections", {}).items():
                self.connections[(sender, idx)] = level

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
