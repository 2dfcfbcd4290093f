"""Kubernetes: CRDs, the Trial -> Job reconcile loop and the Kubernetes executor. Never imports torch.

Its public surface, the only names code outside ``operator/`` imports (``.importlinter``:
rooms-used-through-their-surface), each loaded on first use (``kubenas.surface``):
``run_operator`` (``kubenas operator``), ``KubernetesExecutor`` and
``write_experiment_status`` (the in-cluster search, ``kubenas.cluster_search``), ``Kube``,
``state_owner``.
"""

from kubenas.surface import lazy_surface

SURFACE = {
    "run_operator": "main:run",
    "KubernetesExecutor": "executor:KubernetesExecutor",
    "write_experiment_status": "executor:write_experiment_status",
    "Kube": "kube:Kube",
    "state_owner": "validation:state_owner",
}
__all__ = sorted(SURFACE)
__getattr__ = lazy_surface(globals(), SURFACE)
