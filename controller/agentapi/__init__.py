"""The agent API: what edge agents speak to instead of the database (`fogctl serve-agents`)."""
