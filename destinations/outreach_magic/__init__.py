"""The Outreach Magic ``update_attributes`` dlt destination.

The ``@dlt.destination`` factory lands with the sync engine; the contract, identifier
normalization, staging and HTTP client are modules of this package.
"""
