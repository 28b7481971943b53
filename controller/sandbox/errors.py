"""The one error type of the sandbox, so the CLI can print it as one line."""


class SandboxError(RuntimeError):
    """Something the local environment needs is missing or did not start; the text says what."""
