"""fog-controller: reconciles FogDeployment resources into a PostgreSQL record of fog replicas."""
