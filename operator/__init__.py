"""Kubernetes: CRDs, the Trial -> Job reconcile loop and the Kubernetes executor. Never imports torch."""
