"""A local, stateful emulator of the Outreach Magic ``update_attributes`` API."""
