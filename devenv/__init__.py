"""The real local test environment: kube-apiserver, controller-manager, scheduler, etcd,
SeaweedFS S3 and a fake kubelet, all on 127.0.0.1 (``make dev-cluster``, the test fixtures).

Not part of the ``kubenas`` package: it is development tooling that the tests import.
"""
