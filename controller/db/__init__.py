"""Database adapters: tables, engine, snapshot, apply."""
