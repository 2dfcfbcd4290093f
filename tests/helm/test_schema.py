"""Bad values fail at install time, with a message that names the field (values.schema.json
and the chart's own cross-field checks)."""

from __future__ import annotations

import pytest

POOL = {"name": "default", "maxInFlight": 2}

BAD_VALUES = [
    # (values, text that must appear in helm's message)
    ({"imag": {"tag": "x"}}, "Additional property imag is not allowed"),
    ({"image": {"repository": ""}}, "image.repository"),
    ({"image": {"pullPolicy": "Sometimes"}}, "image.pullPolicy"),
    ({"image": {"tag": 12}}, "image.tag"),
    ({"image": {"pullSecrets": [{"name": "regcred"}]}}, "image.pullSecrets.0"),
    ({"watchNamespaces": ["Team_A"]}, "watchNamespaces.0"),
    ({"storage": {"bucket": "Bad Bucket"}}, "storage.bucket"),
    ({"storage": {"endpoint": "seaweedfs:8333"}}, "storage.endpoint"),
    ({"storage": {"prefix": "/abs/path/"}}, "storage.prefix"),
    ({"storage": {"secretKey": "x"}}, "Additional property secretKey is not allowed"),
    ({"workerPools": []}, "workerPools"),
    ({"workerPools": [{"maxInFlight": 1}]}, "workerPools.0: name is required"),
    ({"workerPools": [{**POOL, "name": "GPU_pool"}]}, "workerPools.0.name"),
    ({"workerPools": [{**POOL, "maxInFlight": 0}]}, "workerPools.0.maxInFlight"),
    ({"workerPools": [{**POOL, "gpusPerTrial": "1"}]}, "workerPools.0.gpusPerTrial"),
    ({"workerPools": [{**POOL, "gpusPerTrial": -1}]}, "workerPools.0.gpusPerTrial"),
    ({"workerPools": [{**POOL, "resources": {"cpu": "lots"}}]}, "workerPools.0.resources.cpu"),
    ({"workerPools": [{**POOL, "nodeSelector": {"kubenas.dev/pool": True}}]},
     "workerPools.0.nodeSelector.kubenas.dev/pool"),
    ({"workerPools": [{**POOL, "tolerations": [{"operator": "Maybe"}]}]},
     "workerPools.0.tolerations.0.operator"),
    ({"workerPools": [{**POOL, "gpus": 1}]}, "Additional property gpus is not allowed"),
    ({"workerPools": [POOL, POOL]}, 'workerPools[1].name: duplicate pool name "default"'),
    ({"operator": {"nodeSelector": ["a"]}}, "operator.nodeSelector"),
    ({"operator": {"logLevel": "verbose"}}, "operator.logLevel"),
    ({"operator": {"resources": {"request": {"cpu": "1"}}}}, "Additional property request is not allowed"),
    ({"controller": {"replicas": 0}}, "controller.replicas"),
    ({"controller": {"affinity": {"nodeAfinity": {}}}}, "Additional property nodeAfinity is not allowed"),
    ({"podSecurityContext": {"runAsNonRoot": False}}, "podSecurityContext.runAsNonRoot"),
    ({"podSecurityContext": {"runAsUser": 0}}, "podSecurityContext.runAsUser"),
    ({"containerSecurityContext": {"allowPrivilegeEscalation": True}},
     "containerSecurityContext.allowPrivilegeEscalation"),
    ({"containerSecurityContext": {"privileged": True}}, "containerSecurityContext.privileged"),
    ({"metrics": {"port": 80}}, "metrics.port"),
    ({"metrics": {"serviceMonitor": {"interval": "often"}}}, "metrics.serviceMonitor.interval"),
    ({"metrics": {"enabled": False, "serviceMonitor": {"enabled": True}}},
     "metrics.serviceMonitor.enabled: needs metrics.enabled=true"),
    # Credentials: exactly one source.
    ({"storage": {"existingSecret": ""}},
     "storage.existingSecret is empty, so storage.accessKeyId and storage.secretAccessKey are both required"),
    ({"storage": {"existingSecret": "", "accessKeyId": "AKID"}},
     "storage.accessKeyId and storage.secretAccessKey are both required"),
    ({"storage": {"accessKeyId": "AKID", "secretAccessKey": "s"}},
     "set either storage.existingSecret or storage.accessKeyId + storage.secretAccessKey, not both"),
]


@pytest.mark.parametrize("values,expected", BAD_VALUES,
                         ids=[f"{i:02d}-{e[:40]}" for i, (_, e) in enumerate(BAD_VALUES)])
def test_bad_values_are_rejected_naming_the_field(helm, values, expected):
    msg = helm.template_fails(values)
    assert expected in msg, f"helm's message does not name {expected!r}:\n{msg}"


def test_good_variations_are_accepted(helm):
    for values in (
        {"workerPools": [{"name": "gpu", "gpusPerTrial": 2, "maxInFlight": 1,
                          "resources": {"cpu": 4, "memory": "30Gi", "ephemeral-storage": "10Gi"}}]},
        {"storage": {"existingSecret": "", "accessKeyId": "a", "secretAccessKey": "b",
                     "endpoint": "https://s3.example.com", "prefix": ""}},
        {"watchNamespaces": ["a", "b-2"], "image": {"tag": "sha-1234abc"}},
        {"operator": {"resources": {}}, "controller": {"resources": {"limits": {"nvidia.com/gpu": 1}}}},
    ):
        helm.template(values)
