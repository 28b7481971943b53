"""Agent credentials in the database: issue, exchange, rotate, revoke, authenticate.

Only digests are stored (controller/model/credentials.py says why SHA-256 suffices). Every
call that accepts a token looks it up in the transaction that acts on it, so a revoked or
rotated token, or one of a removed node, is refused from the commit that deleted it on: no
cache stands between a revocation and the next request.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import any_, delete, func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from controller.db.nodes import NodeNotFoundError
from controller.db.queries import bytea_array, bytea_array_slot, core
from controller.db.tables import Node, NodeCredential
from controller.model.credentials import TokenKind, digest, kind_of, new_token

# A bootstrap token is pasted into an edge box's provisioning by a person or a pipeline; a day
# is Kubernetes' default for its bootstrap tokens, and long enough to install a machine.
BOOTSTRAP_TTL = timedelta(hours=24)


@dataclass(frozen=True, slots=True)
class NodeIdentity:
    """Who a valid node token speaks for."""

    node_id: uuid.UUID
    node: str


@dataclass(frozen=True, slots=True)
class Issued:
    """A token just issued (shown once: only its digest is kept) and the node it speaks for."""

    identity: NodeIdentity
    token: str


async def issue_bootstrap(session: AsyncSession, *, node: str) -> str:
    """A one-time bootstrap token for `node` (which must exist), valid for BOOTSTRAP_TTL."""
    node_id = await session.scalar(select(Node.id).where(Node.name == node))
    if node_id is None:
        raise NodeNotFoundError(f"no node named {node!r}")
    token = new_token(TokenKind.BOOTSTRAP)
    session.add(
        NodeCredential(
            token_digest=digest(token),
            node_id=node_id,
            kind=TokenKind.BOOTSTRAP,
            expires_at=func.now() + BOOTSTRAP_TTL,
        )
    )
    await session.flush()
    return token


async def issue_node_tokens(session: AsyncSession, *, nodes: Sequence[str]) -> dict[str, str]:
    """Node tokens for many existing nodes at once, skipping the bootstrap exchange.

    For provisioning a fleet in bulk (the benchmark's 5,000 nodes): one lookup and one
    multi-row insert, where a bootstrap token each would cost every agent an extra request and
    transaction at start. Unknown names are a NodeNotFoundError naming the first.
    """
    rows = await session.execute(select(Node.name, Node.id).where(Node.name.in_(nodes)))
    ids = {row.name: row.id for row in rows}
    missing = [name for name in nodes if name not in ids]
    if missing:
        raise NodeNotFoundError(f"no node named {missing[0]!r}")
    tokens = {name: new_token(TokenKind.NODE) for name in nodes}
    if tokens:
        await session.execute(
            insert(NodeCredential),
            [
                {"token_digest": digest(token), "node_id": ids[name], "kind": TokenKind.NODE}
                for name, token in tokens.items()
            ],
        )
    return tokens


async def _issue_node_token(session: AsyncSession, identity: NodeIdentity) -> Issued:
    token = new_token(TokenKind.NODE)
    session.add(
        NodeCredential(token_digest=digest(token), node_id=identity.node_id, kind=TokenKind.NODE)
    )
    await session.flush()
    return Issued(identity=identity, token=token)


async def _consume(session: AsyncSession, token: str, kind: TokenKind) -> NodeIdentity | None:
    """Delete a valid token of `kind` and say whose it was: a token is consumed exactly once.

    DELETE ... RETURNING decides races: of two requests with one bootstrap token, the second
    finds no row (it waits for the first's row lock, then sees it gone).
    """
    if kind_of(token) is not kind:
        return None
    deleted = (
        delete(NodeCredential)
        .where(
            NodeCredential.token_digest == digest(token),
            NodeCredential.kind == kind,
            func.coalesce(NodeCredential.expires_at > func.now(), True),
        )
        .returning(NodeCredential.node_id)
    )
    node_id = await session.scalar(deleted)
    if node_id is None:
        return None
    name = await session.scalar(select(Node.name).where(Node.id == node_id))
    return None if name is None else NodeIdentity(node_id=node_id, node=name)


async def exchange(session: AsyncSession, *, bootstrap_token: str) -> Issued | None:
    """Trade a bootstrap token for the node's own token (None: not a valid bootstrap token)."""
    identity = await _consume(session, bootstrap_token, TokenKind.BOOTSTRAP)
    return None if identity is None else await _issue_node_token(session, identity)


async def rotate(session: AsyncSession, *, token: str) -> Issued | None:
    """Replace a node token by a new one; the old one stops working in this commit."""
    identity = await _consume(session, token, TokenKind.NODE)
    return None if identity is None else await _issue_node_token(session, identity)


async def revoke(session: AsyncSession, *, node: str) -> int:
    """Delete every credential of `node` (bootstrap ones too); returns how many there were."""
    node_id = await session.scalar(select(Node.id).where(Node.name == node))
    if node_id is None:
        raise NodeNotFoundError(f"no node named {node!r}")
    result = await session.execute(delete(NodeCredential).where(NodeCredential.node_id == node_id))
    return int(result.rowcount)  # type: ignore[attr-defined]


_credentials, _nodes = core(NodeCredential), core(Node)
# Built once, at Core level (table columns, not ORM attributes: no ORM loading of the rows),
# and executed with the digests as its one parameter: every request of the agent API runs it.
_AUTHENTICATE = (
    select(_credentials.c.token_digest, _nodes.c.id, _nodes.c.name)
    .join(_nodes, _nodes.c.id == _credentials.c.node_id)
    .where(
        _credentials.c.token_digest == any_(bytea_array_slot("digests")),
        _credentials.c.kind == TokenKind.NODE,
    )
)


async def authenticate(
    session: AsyncSession, digests: Sequence[bytes]
) -> dict[bytes, NodeIdentity]:
    """The node each valid node-token digest speaks for; unknown digests are simply absent.

    A plain read, no row lock: locking would write every credential row on every heartbeat.
    A revocation that commits while a request is in flight lets that one request finish, as
    a Kubernetes API server finishes a request whose token was deleted meanwhile.
    """
    if not digests:
        return {}
    # all(): one fetch, where iterating the result fetches row by row through the async adapter.
    rows = (await session.execute(_AUTHENTICATE, {"digests": bytea_array(digests)})).all()
    return {token: NodeIdentity(node_id=node_id, node=name) for token, node_id, name in rows}
