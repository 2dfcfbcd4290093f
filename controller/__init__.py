"""The search: spaces, the policy, strategies and the update loop.

Knows nothing of Kubernetes or S3: it talks to an Executor and a ResultSource
(``kubenas.contracts``) and persists through ``kubenas.storage.ObjectStore``.
"""
