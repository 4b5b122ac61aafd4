"""Deployment descriptions generated from a build's manifest (``exporter deploy``): Kubernetes for now."""
