"""Durable background work: the mail outbox, its job runner, housekeeping and the ``jobs`` CLI."""
