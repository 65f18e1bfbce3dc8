"""Authentication: registration, confirmation, sessions and password reset."""
