"""Node tokens issued in bulk (provisioning a fleet, as the benchmark does) on real Postgres."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine
from test_reconciler import add_node

from controller.db import credentials
from controller.db import engine as db_engine
from controller.db.nodes import NodeNotFoundError
from controller.db.tables import NodeCredential
from controller.model.credentials import TokenKind, digest, kind_of


async def test_each_bulk_token_speaks_for_its_own_node(engine: AsyncEngine) -> None:
    sessions = db_engine.make_sessions(engine)
    for name in ("edge-a", "edge-b", "edge-c"):
        await add_node(sessions, name)
    async with sessions() as session, session.begin():
        tokens = await credentials.issue_node_tokens(session, nodes=["edge-a", "edge-b"])
    assert all(kind_of(token) is TokenKind.NODE for token in tokens.values())
    async with sessions() as session:
        valid = await credentials.authenticate(session, [digest(t) for t in tokens.values()])
    assert {key: identity.node for key, identity in valid.items()} == {
        digest(token): node for node, token in tokens.items()
    }


async def test_an_unknown_node_in_the_batch_issues_nothing(engine: AsyncEngine) -> None:
    sessions = db_engine.make_sessions(engine)
    await add_node(sessions, "edge-a")
    with pytest.raises(NodeNotFoundError, match="edge-x"):
        async with sessions() as session, session.begin():
            await credentials.issue_node_tokens(session, nodes=["edge-a", "edge-x"])
    async with sessions() as session:
        assert await session.scalar(select(func.count()).select_from(NodeCredential)) == 0
