"""`fogctl rollout status|history|undo|promote NAMESPACE/NAME`: kubectl's rollout commands.

`kubectl rollout` refuses custom resources, so scripts that deploy with `kubectl apply` and
then wait need `status` (or `kubectl wait --for=condition=Ready`, see the README). The flags
and the exit codes are kubectl's: 0 once rolled out, 1 when the rollout failed (Stalled) or
the timeout passed, each with one line.

`history` lists the revisions the operator recorded in PostgreSQL (model/revisions.py), and
`undo` goes back to one by patching the FogDeployment's spec to its template: the spec stays
the one source of truth, and Git and GitOps tools see the change as any other edit (GitOps
users revert the commit instead; an undo would be reverted by the next sync).

`promote` lets a revision's canaries (spec.strategy.canary) give way to the full rollout: it
stamps the revision row promoted (migration 0015), which wakes the deployment's reconcile. It
writes no spec: a promotion is a decision about this rollout, not part of the desired state.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
from datetime import UTC, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from controller.cli import arguments, database
from controller.cli.db_commands import add_database_url
from controller.cli.errors import CommandError
from controller.cli.tables import render
from controller.db import revisions as db_revisions
from controller.errors import FogError
from controller.kube.following import versions
from controller.kube.resource import read_spec
from controller.kube.rollback import patch_spec
from controller.model.revisions import KnownRevision, changes, merge_patch, undo_target
from controller.model.rollout import progress


class RolloutFailedError(FogError):
    """The rollout cannot finish as things stand: the reason, for one line and exit code 1."""


def _action(actions: Any, name: str, *, help: str, handler: Any) -> argparse.ArgumentParser:
    """One `rollout` action on one object: NAMESPACE/NAME, and the function that runs it."""
    parser: argparse.ArgumentParser = actions.add_parser(name, help=help)
    parser.add_argument("target", type=arguments.namespaced_name, metavar="NAMESPACE/NAME")
    parser.set_defaults(handler=handler)
    return parser


def register(commands: Any) -> None:
    """Add `rollout` and its `status`, `history`, `undo` and `promote` to `fogctl`."""
    rollout = commands.add_parser(
        "rollout", help="follow, list and undo a FogDeployment's rollouts"
    )
    actions = rollout.add_subparsers(dest="action", required=True, metavar="ACTION")
    status = _action(
        actions,
        "status",
        help="watch until the current spec runs on every replica (kubectl rollout status)",
        handler=_status,
    )
    status.add_argument(
        "-w",
        "--watch",
        type=arguments.boolean,
        default=True,
        metavar="BOOL",
        help="follow until done (default true); false prints where it stands and exits",
    )
    status.add_argument(
        "--timeout",
        type=arguments.duration,
        default=None,
        metavar="DURATION",
        help="give up after this long, e.g. 5m (default: wait for ever, as kubectl)",
    )
    history = _action(
        actions,
        "history",
        help="the revisions kept in the database (kubectl rollout history)",
        handler=_history,
    )
    history.add_argument("-o", "--output", choices=("table", "json"), default="table")
    add_database_url(history)
    undo = _action(
        actions,
        "undo",
        help="go back to an earlier revision by patching the spec (kubectl rollout undo)",
        handler=_undo,
    )
    undo.add_argument(
        "--to-revision",
        type=arguments.number(int, minimum=0),
        default=0,
        metavar="N",
        help="the revision to go back to (default 0: the previous one, as kubectl)",
    )
    add_database_url(undo)
    promote = _action(
        actions,
        "promote",
        help="let the new revision's canaries give way to the full rollout",
        handler=_promote,
    )
    add_database_url(promote)


async def _follow(namespace: str, name: str, *, watch: bool) -> None:
    """Print each new state until the rollout is done; raise if it failed."""
    said = ""
    async for body in versions(namespace, name, follow=watch):
        state = progress(body)
        if state.failed:
            raise RolloutFailedError(state.message)
        if state.message != said:
            print(state.message, flush=True)
            said = state.message
        if state.done:
            return


async def _with_timeout(namespace: str, name: str, *, watch: bool, limit: timedelta | None) -> None:
    try:
        async with asyncio.timeout(limit.total_seconds() if limit else None):
            await _follow(namespace, name, watch=watch)
    except TimeoutError:
        raise RolloutFailedError("timed out waiting for the condition") from None


def _status(args: argparse.Namespace) -> int:
    namespace, name = args.target
    asyncio.run(_with_timeout(namespace, name, watch=args.watch, limit=args.timeout))
    return 0


def _revisions(database_url: str | None, namespace: str, name: str) -> list[db_revisions.Revision]:
    """The deployment's revisions; CommandError if the database knows no such deployment."""

    async def job(sessions: async_sessionmaker[AsyncSession]) -> list[db_revisions.Revision] | None:
        async with sessions() as session:
            return await db_revisions.history(session, namespace=namespace, name=name)

    found = database.run(database_url, job)
    if found is None:
        raise CommandError(
            f'fogdeployment "{name}" in namespace {namespace} has no revisions:'
            " the database has no such deployment"
        )
    return found


def _change(previous: db_revisions.Revision | None, revision: db_revisions.Revision) -> str:
    """The CHANGE column: the image, and what differs from the revision before it."""
    if revision.template is None:
        return "(template not recorded: older than the revision history)"
    image = f"image {revision.template.get('image')}"
    earlier = None if previous is None else previous.template
    changed = changes(earlier, revision.template) if earlier is not None else []
    return f"{image}; changed {', '.join(changed)}" if changed else image


def _rollout(row: db_revisions.Revision) -> str:
    """The ROLLOUT column: how this revision's last rollout went (canaries, autoRevert)."""
    if row.aborted_at is not None:
        return f"aborted ({row.abort_reason})"
    said = "completed" if row.completed_at is not None else ""
    if row.promoted_at is not None:
        said = f"promoted by {row.promoted_by}" + (f", {said}" if said else "")
    return said


def _history(args: argparse.Namespace) -> int:
    namespace, name = args.target
    found = _revisions(args.database_url, namespace, name)
    previous = [None, *found[:-1]]
    if args.output == "json":
        listed = [
            {
                "revision": row.number,
                "hash": row.hash,
                "created": row.created_at.isoformat(),
                "createdBy": row.created_by,
                "completed": row.completed_at.isoformat() if row.completed_at else None,
                "promoted": row.promoted_at.isoformat() if row.promoted_at else None,
                "promotedBy": row.promoted_by,
                "aborted": row.aborted_at.isoformat() if row.aborted_at else None,
                "abortReason": row.abort_reason,
                "replicas": row.replicas,
                "current": row.current,
                "change": _change(before, row),
                "template": row.template,
            }
            for before, row in zip(previous, found, strict=True)
        ]
        print(json.dumps({"revisions": listed}, indent=2))
        return 0
    rows = [
        [
            str(row.number),
            row.created_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ"),
            row.created_by or "",
            _rollout(row),
            _change(before, row),
        ]
        for before, row in zip(previous, found, strict=True)
    ]
    print(render(["REVISION", "CREATED", "BY", "ROLLOUT", "CHANGE"], rows))
    return 0


async def _object(namespace: str, name: str) -> dict[str, Any]:
    """The FogDeployment as it is now (ObjectGoneError if there is none)."""
    async with contextlib.aclosing(versions(namespace, name, follow=False)) as bodies:
        return await anext(bodies)


def _undo(args: argparse.Namespace) -> int:
    namespace, name = args.target
    body = asyncio.run(_object(namespace, name))
    spec = read_spec(name, body.get("spec") or {})
    found = _revisions(args.database_url, namespace, name)
    number = undo_target(
        [KnownRevision(row.number, row.hash, row.completed_at is not None) for row in found],
        current=spec.revision,
        to_revision=args.to_revision or None,
        what=f'fogdeployment "{name}"',
    )
    template = next(row.template for row in found if row.number == number)
    if template is None:
        raise CommandError(
            f'revision {number} of fogdeployment "{name}" was recorded before templates were'
            " kept: its template is unknown"
        )
    patch = merge_patch(spec.desired.template.as_spec(), template)
    asyncio.run(
        patch_spec(namespace, name, patch, resource_version=body["metadata"]["resourceVersion"])
    )
    print(f'fogdeployment "{name}" rolled back to revision {number}')
    return 0


_PROMOTE_REFUSED = {
    db_revisions.PromoteOutcome.UNKNOWN: "the database has no such deployment",
    db_revisions.PromoteOutcome.NO_REVISION: "it has no revision yet",
    db_revisions.PromoteOutcome.DONE: "revision {number} already rolled out",
    db_revisions.PromoteOutcome.ALREADY: "revision {number} is already promoted",
    db_revisions.PromoteOutcome.ABORTED: (
        "the rollout of revision {number} was aborted: change the spec to start a new one"
    ),
}


def _promote(args: argparse.Namespace) -> int:
    namespace, name = args.target

    async def job(
        sessions: async_sessionmaker[AsyncSession],
    ) -> tuple[db_revisions.PromoteOutcome, int | None]:
        async with sessions() as session:
            return await db_revisions.promote_newest(
                session, namespace=namespace, name=name, actor="fogctl"
            )

    outcome, number = database.run(args.database_url, job)
    if outcome is not db_revisions.PromoteOutcome.PROMOTED:
        why = _PROMOTE_REFUSED[outcome].format(number=number)
        raise CommandError(f'fogdeployment "{name}" in namespace {namespace}: {why}')
    print(f'fogdeployment "{name}" revision {number} promoted')
    return 0
