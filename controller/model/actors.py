"""Who changed a row: the actor names written to `status_actor` and the history tables.

SQL reads them too: the notify trigger (migration 0002) wakes the operator for every actor but
the operator itself. tests/db/test_sql_contract.py holds the two to the same names.
"""

# An agent's reports are recorded as `agent:<node>` (controller.db.reports.agent_actor): whose
# report it was, per node.
AGENT_PREFIX = "agent:"

# The operator's reconciles and soft deletes.
OPERATOR = "operator"
# The node-lifecycle check, failing the replicas of a node that went silent.
NODE_LIFECYCLE = "node-lifecycle"
