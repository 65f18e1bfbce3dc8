"""Contacts: each user's address book (CRUD, search, birthdays, vCard/CSV exchange)."""
