"""Database tables, API schemas and the engine/session setup."""
