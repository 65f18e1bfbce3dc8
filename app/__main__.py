"""``python -m app``: serve the API (see :mod:`app.server`)."""

from app.server import main

main()
