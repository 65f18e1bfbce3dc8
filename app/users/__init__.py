"""Users: accounts, roles and avatars."""
