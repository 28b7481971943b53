"""Agent credentials: opaque bearer tokens, kept by the database only as SHA-256 digests.

An edge agent proves which node it is with a token, never with database credentials (docs/
agent-protocol.md, "Trust"). Two kinds, told apart by a prefix, as GitHub's `ghp_` tokens are
(a secret scanner, a log reader and the server all see at a glance what leaked):

* `fogb_`: a **bootstrap** token, printed once by `fogctl node register`, valid for a day and
  for one exchange; the agent trades it for
* `fogn_`: its **node** token, valid until rotated, revoked or the node is removed.

Why tokens and not client certificates: revocation must take effect at once and the agent API
must stay stateless behind any load balancer; a token looked up per request in the database does
both, and rotating a CA or running CRLs/OCSP for thousands of edge boxes does neither simply.
The token carries 256 random bits, so a plain SHA-256 (not a slow password hash) is the right
digest: nobody can guess a preimage, and a lookup by digest costs one index probe.
"""

from __future__ import annotations

import enum
import hashlib
import secrets


class TokenKind(enum.StrEnum):
    """What a token may do (the database's `node_credentials.kind`)."""

    BOOTSTRAP = "bootstrap"
    NODE = "node"


PREFIXES = {TokenKind.BOOTSTRAP: "fogb_", TokenKind.NODE: "fogn_"}
# 32 random bytes: 256 bits, the strength of the SHA-256 digest that stores them.
TOKEN_BYTES = 32
# The longest token we issue (prefix + 43 url-safe base64 characters), with room to spare; a
# longer Authorization header is refused before any hashing or lookup.
TOKEN_MAX = 100


def new_token(kind: TokenKind) -> str:
    """A fresh random token of `kind`."""
    return PREFIXES[kind] + secrets.token_urlsafe(TOKEN_BYTES)


def kind_of(token: str) -> TokenKind | None:
    """The kind a token claims by its prefix (None: not one of ours)."""
    for kind, prefix in PREFIXES.items():
        if token.startswith(prefix) and len(token) <= TOKEN_MAX:
            return kind
    return None


def digest(token: str) -> bytes:
    """What the database stores and looks up: the token's SHA-256."""
    return hashlib.sha256(token.encode()).digest()
