"""Kubernetes adapters: the FogDeployment resource's shape, status patches and events."""
