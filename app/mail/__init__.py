"""Outgoing mail: sender adapters (SMTP or the log) and the messages the service sends."""
