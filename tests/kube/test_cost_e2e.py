"""End to end: `fogctl cost` matches a figure worked out by hand, across node loss and a rollout.

The real stack (kube-apiserver, the operator, PostgreSQL, the agent API and simulated agents)
runs a scripted story: four replicas spread over four nodes of three kinds (two priced as
edge, one as core, one that no class prices), one node lost, a rollout to a larger request, a
scale-up past the room left so that one replica waits until the lost node is back, then a
scale to zero so that every replica's time is closed. The expected figure is computed here,
plainly, from the rows read back with SQL: each replica costs from the row that created it on
its node (or, if it waited, from its `assigned_at`) to the row that stopped or failed it, at
its own request and its node's prices; `fogctl cost -o json` must print exactly that, to the
sixth decimal.
"""

from __future__ import annotations

import json
import signal
from datetime import timedelta
from decimal import ROUND_HALF_EVEN, Decimal, localcontext
from fractions import Fraction
from pathlib import Path
from typing import Any

from conftest import Kubectl, Stack, wait_for
from test_operator import manifest, ready, sql

NAME = "web"
PRICES = {
    "currency": "EUR",
    "classes": [
        {
            "name": "edge",
            "nodeSelector": {"matchLabels": {"tier": "edge"}},
            "prices": {
                "cpuCoreHour": "0.031",
                "memoryGBHour": "0.0043",
                "storageGBHour": "0.00017",
            },
        },
        {
            "name": "core",
            "nodeSelector": {
                "matchExpressions": [{"key": "tier", "operator": "In", "values": ["core"]}]
            },
            "prices": {"cpuCoreHour": "0.047", "memoryGBHour": "0.0061"},
        },
    ],
}
NODES = {"edge-1": "edge", "edge-2": "edge", "edge-3": "core", "edge-4": None}
LOST = "edge-2"


def cost_manifest(namespace: str, image: str, cpu: float) -> str:
    """Four replicas of the priced size: 768 MB and 3 GB each beside `cpu` cores."""
    return manifest(NAME, 4, image, cpu, namespace=namespace, memory_mb=768, storage_gb=3)


def register_labelled(stack: Stack, name: str, tier: str | None) -> None:
    """`fogctl node register` with the node's class label, its token handed to the agents."""
    labels = [] if tier is None else ["--label", f"tier={tier}"]
    printed = stack.fogctl(
        *("node", "register", name, "--cpu", "4", "--memory-mb", "8192", "--storage-gb", "100"),
        *labels,
        *("-o", "json"),
    )
    assert printed.returncode == 0, printed.stderr
    stack.add_tokens({name: json.loads(printed.stdout)["bootstrapToken"]})


def closed(stack: Stack) -> bool:
    """Every replica stopped or failed: no time is still running up."""
    return sql(
        stack, "SELECT count(*) FROM deployment_replicas WHERE status NOT IN ('stopped', 'failed')"
    ) == [(0,)]


def by_hand(stack: Stack) -> dict[str, Any]:
    """The cost of every replica from its first and last history rows, written out plainly."""
    prices = {c["name"]: c["prices"] for c in PRICES["classes"]}
    replicas = sql(
        stack,
        "SELECT r.cpu_millicores, r.memory_mb, r.storage_gb, r.revision,"
        " (SELECT n.name FROM nodes n WHERE n.id = first.node_id), first.changed_at,"
        " (SELECT n.name FROM nodes n WHERE n.id = last.node_id), r.assigned_at,"
        " last.new_status::text, last.reason, last.changed_at"
        " FROM deployment_replicas r"
        " JOIN replica_status_history first"
        "   ON first.replica_id = r.id AND first.old_status IS NULL"
        " JOIN replica_status_history last"
        "   ON last.replica_id = r.id AND last.new_status IN ('stopped', 'failed')",
    )
    cost, held, unpriced = Fraction(0), Fraction(0), Fraction(0)
    lost, waited, revisions = 0, 0, set()
    for cpu_m, memory_mb, storage_gb, revision, *placed, status, reason, ended in replicas:
        created_on, created, node, assigned = placed
        if created_on is None:  # it waited for room: it holds from its assignment
            waited += 1
            start = assigned
        else:
            assert created_on == node
            start = created
        seconds = Fraction((ended - start) // timedelta(microseconds=1), 10**6)
        held += seconds
        revisions.add(revision)
        lost += node == LOST and status == "failed" and reason == "NodeLost"
        tier = NODES[node]
        if tier is None:
            unpriced += seconds
            continue
        price = {k: Fraction(Decimal(v)) for k, v in prices[tier].items()}
        per_hour = (
            Fraction(cpu_m, 1000) * price.get("cpuCoreHour", 0)
            + Fraction(memory_mb, 1024) * price.get("memoryGBHour", 0)
            + storage_gb * price.get("storageGBHour", 0)
        )
        cost += seconds / 3600 * per_hour
    return {
        "replicas": len(replicas),
        "lost": lost,
        "waited": waited,
        "revisions": len(revisions),
        "cost": six_places(cost),
        "heldSeconds": six_places(held),
        "unpricedSeconds": six_places(unpriced),
    }


def six_places(value: Fraction) -> str:
    with localcontext() as exact:
        exact.prec = 60  # enough digits that the division is exact before the rounding
        quotient = Decimal(value.numerator) / Decimal(value.denominator)
        return str(quotient.quantize(Decimal("0.000001"), rounding=ROUND_HALF_EVEN))


def test_cost_matches_the_hand_computed_figure_across_node_loss_a_rollout_and_a_wait(
    stack: Stack, kubectl: Kubectl, namespace: str, tmp_path: Path
) -> None:
    for node, tier in NODES.items():
        register_labelled(stack, node, tier)
    # A short grace so that the node loss takes seconds (as in test_operator's node loss test).
    stack.operator.args += ["--node-grace-seconds", "3"]
    stack.operator.start()
    stack.agent_for("steady", [n for n in NODES if n != LOST])
    flaky = stack.agent_for(LOST, [LOST])
    wait_for(
        "four nodes heartbeating",
        lambda: (
            sql(
                stack,
                "SELECT count(*) FROM nodes JOIN node_leases ON node_id = id"
                " WHERE status = 'online' AND renewed_at > now() - interval '1 second'",
            )
            == [(4,)]
        ),
    )
    kubectl("apply", "-f", "-", stdin=cost_manifest(namespace, "app:1", 0.5))
    wait_for("Ready on four nodes", lambda: ready(kubectl, namespace, NAME, 4))

    flaky.signal(signal.SIGUSR1)  # edge-2 goes silent: lost after the grace
    wait_for(
        "the replica on edge-2 lost",
        lambda: (
            sql(stack, "SELECT count(*) FROM replica_status_history WHERE reason = 'NodeLost'")
            == [(1,)]
        ),
    )
    wait_for("Ready again on three nodes", lambda: ready(kubectl, namespace, NAME, 4))

    kubectl("apply", "-f", "-", stdin=cost_manifest(namespace, "app:2", 1.0))
    wait_for(
        "the rollout done",
        lambda: (
            sql(
                stack,
                "SELECT count(*) FROM deployment_replicas WHERE status = 'running'"
                " AND cpu_millicores = 1000",
            )
            == [(4,)]
            and sql(
                stack,
                "SELECT count(*) FROM deployment_replicas WHERE cpu_millicores = 500"
                " AND status NOT IN ('stopped', 'failed')",
            )
            == [(0,)]
        ),
    )
    # Three nodes of 4 cores hold 12 replicas of 1 core: the 13th waits without a node until
    # edge-2 is back, and costs from the moment it is assigned there.
    kubectl("scale", "-n", namespace, f"fogdeploy/{NAME}", "--replicas=13")
    wait_for(
        "one replica waiting for room",
        lambda: (
            sql(stack, "SELECT count(*) FROM deployment_replicas WHERE status = 'running'")
            == [(12,)]
            and sql(
                stack,
                "SELECT count(*) FROM deployment_replicas"
                " WHERE status = 'pending' AND node_id IS NULL",
            )
            == [(1,)]
        ),
    )
    flaky.signal(signal.SIGUSR2)  # edge-2 speaks again
    wait_for("Ready with 13", lambda: ready(kubectl, namespace, NAME, 13))
    kubectl("scale", "-n", namespace, f"fogdeploy/{NAME}", "--replicas=0")
    wait_for("every replica stopped", lambda: closed(stack))

    expected = by_hand(stack)
    # 4 of app:1, 1 replacement for the lost one, 4 of app:2 and 9 more of it (at least the
    # 13th waited for room); two revisions; one lost.
    story = ("replicas", "revisions", "lost")
    assert tuple(expected[key] for key in story) == (18, 2, 1)
    assert expected["waited"] >= 1
    prices_file = tmp_path / "prices.json"
    prices_file.write_text(json.dumps(PRICES))
    printed = stack.fogctl("cost", "-n", namespace, "--prices", str(prices_file), "-o", "json")
    assert printed.returncode == 0, printed.stderr
    report = json.loads(printed.stdout)
    [deployment] = report["deployments"]
    assert (deployment["namespace"], deployment["name"]) == (namespace, NAME)
    shown = {key: deployment[key] for key in ("cost", "heldSeconds", "unpricedSeconds")}
    assert shown == {key: expected[key] for key in shown}
    assert report["total"]["cost"] == expected["cost"]
    assert report["unpricedNodes"] == ["edge-4"]
    assert Decimal(expected["unpricedSeconds"]) > 0  # edge-4 ran replicas, at no price
