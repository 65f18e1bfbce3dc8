"""Contacts API: an async address book service built on Litestar."""

__version__ = "1.0.0"
