"""`fogctl agent simulate` as an edge box runs it: one bootstrap token, no database URL."""

from __future__ import annotations

import os
from pathlib import Path

from conftest import AgentApi

from controller.sandbox import harness
from controller.sandbox.harness import FAST_AGENT_ARGS, FogctlProcess

# The agent starts, exchanges its token and runs a pending replica within a second or two.
CONVERGE_SECONDS = 60.0


def test_an_agent_with_a_bootstrap_token_runs_its_node_until_revoked(
    api: AgentApi, tmp_path: Path
) -> None:
    bootstrap = api.register("edge-a")
    # Only the agent API's address and the token: no database URL, no kubeconfig.
    env = harness.agent_environment(os.environ)
    log = tmp_path / "agent.log"
    agent = FogctlProcess(
        log,
        [
            "agent",
            "simulate",
            "edge-a",
            "--server",
            api.url,
            "--token",
            bootstrap,
            *FAST_AGENT_ARGS,
        ],
        env,
    ).start()
    try:
        replica = api.place("edge-a", name="web")
        harness.wait_for(
            "the agent to run the replica",
            lambda: api.status_of(replica)[0] == "running",
            CONVERGE_SECONDS,
        )
        actors = api.sql(
            "SELECT DISTINCT actor FROM replica_status_history WHERE replica_id = %s"
            " AND new_status IN ('starting', 'running')",
            (replica,),
        )
        assert actors == [("agent:edge-a",)]

        api.fogctl("node", "revoke", "edge-a")

        harness.wait_for("the agent to stop", lambda: agent.exit_code() is not None, 30)
        assert agent.exit_code() == 1
        last = log.read_text().strip().splitlines()[-1]
        assert last.endswith("every node token of this agent was revoked"), last
    finally:
        agent.stop()
        print(log.read_text()[-3000:])  # shown if the test failed
