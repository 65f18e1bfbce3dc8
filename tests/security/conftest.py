"""Fixtures of the security tests: the reliability suite's in-loop client and SMTP sink."""

from tests.reliability.conftest import client, serve_with, smtp_sink

__all__ = ["client", "serve_with", "smtp_sink"]
