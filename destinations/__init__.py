"""Destinations: the Outreach Magic dlt destination lives in ``destinations.outreach_magic``."""
