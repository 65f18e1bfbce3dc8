"""The account's data export (``GET /api/users/me/export``)."""
