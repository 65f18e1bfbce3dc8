"""Security primitives: password hashing, typed tokens, authentication and guards."""
