"""The operator: the reconciler that runs observe -> plan -> apply -> status, and kopf handlers."""
