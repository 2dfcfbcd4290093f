"""The one resourceVersion-guarded status merge patch (``status_patch`` / ``patch_status``)."""

from __future__ import annotations

import pytest

from kubenas.operator.kube import custom_path
from kubenas.operator.patches import patch_status, status_patch


def test_the_patch_sets_the_new_status_nulls_what_went_and_names_the_version_read():
    old = {"phase": "Running", "podName": "p", "message": "m"}
    new = {"phase": "Failed", "message": "m", "reason": "R"}
    assert status_patch(old, new, "41") == {
        "metadata": {"resourceVersion": "41"},
        "status": {"phase": "Failed", "message": "m", "reason": "R", "podName": None}}
    assert status_patch({}, {"a": 1}, "1") == {"metadata": {"resourceVersion": "1"},
                                               "status": {"a": 1}}


def test_the_patch_leaves_its_inputs_alone_and_is_never_unguarded():
    old, new = {"a": 1, "b": 2}, {"a": 3}
    status_patch(old, new, "5")
    assert old == {"a": 1, "b": 2} and new == {"a": 3}
    with pytest.raises(ValueError, match="resourceVersion"):
        status_patch(old, new, None)


def test_patch_status_sends_one_merge_patch_to_the_status_subresource():
    class Kube:
        def __init__(self):
            self.calls = []

        def merge_patch(self, path, body):
            self.calls.append((path, body))
            return {"status": body["status"]}

    kube = Kube()
    out = patch_status(kube, "trials", "ns1", "t1", "9", {"x": 1}, {"y": 2})
    assert kube.calls == [(custom_path("trials", "ns1", "t1", "status"),
                           {"metadata": {"resourceVersion": "9"}, "status": {"y": 2, "x": None}})]
    assert out == {"status": {"y": 2, "x": None}}
