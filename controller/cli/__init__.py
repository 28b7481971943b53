"""`fogctl`, the project's one command line."""
