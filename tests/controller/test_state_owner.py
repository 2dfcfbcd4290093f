"""Whose state is whose: a controller state records the Experiment (namespace, name, UID) it
belongs to, and a search of another UID refuses to resume it unless it asked for exactly
that UID (annotation kubenas.dev/resume-from). ``kubenas run`` (no owner) is unchanged.

Real LocalStore and InstantExecutor (results written the moment a trial is submitted)."""

from __future__ import annotations

import json

import pytest

from kubenas.controller.instant import InstantExecutor, cnn_reinforce_experiment, strategy_factory
from kubenas.controller.loop import STATE_KEY, SearchLoop, StateOwned
from kubenas.controller.results import StoreResultSource
from kubenas.storage.local import LocalStore

OLD = {"namespace": "team-a", "name": "exp", "uid": "11111111-1111-1111-1111-111111111111"}
NEW = {"namespace": "team-a", "name": "exp", "uid": "22222222-2222-2222-2222-222222222222"}


def _loop(store, owner, max_trials=6):
    exp = cnn_reinforce_experiment("exp", max_trials, layers=3)
    return SearchLoop(exp, strategy_factory(exp), InstantExecutor(store, 3),
                      StoreResultSource(store), store, poll_interval=0, owner=owner)


def _state(store) -> dict:
    return json.loads(store.get(STATE_KEY))


def test_the_state_records_its_owner_and_the_same_uid_resumes_it(tmp_path):
    store = LocalStore(tmp_path)
    _loop(store, OLD, max_trials=3).run()
    assert _state(store)["owner"] == OLD
    again = _loop(store, OLD, max_trials=6)
    assert len(again.applied) == 3, "a restarted controller of the same Experiment resumes"
    assert again.run()["applied"] == 6 and _state(store)["owner"] == OLD


def test_a_state_of_another_uid_is_refused_naming_the_annotation_that_resumes_it(tmp_path):
    store = LocalStore(tmp_path)
    _loop(store, OLD, max_trials=3).run()
    before = store.get(STATE_KEY)
    with pytest.raises(StateOwned) as err:
        _loop(store, NEW)
    msg = str(err.value)
    assert f"belongs to Experiment team-a/exp (uid {OLD['uid']}), not this one (uid {NEW['uid']})" in msg
    assert f"annotate this Experiment kubenas.dev/resume-from={OLD['uid']}" in msg
    assert store.get(STATE_KEY) == before, "nothing written over the other Experiment's state"
    with pytest.raises(StateOwned):   # asking for some other UID is no better
        _loop(store, {**NEW, "resumeFrom": "33333333-3333-3333-3333-333333333333"})


def test_resuming_another_uid_only_when_asked_for_exactly_it(tmp_path):
    store = LocalStore(tmp_path)
    _loop(store, OLD, max_trials=3).run()
    loop = _loop(store, {**NEW, "resumeFrom": OLD["uid"]}, max_trials=6)
    assert len(loop.applied) == 3, "continues the old search"
    assert loop.run()["applied"] == 6
    assert _state(store)["owner"] == {**NEW, "resumedFrom": OLD["uid"]}
    _loop(store, NEW, max_trials=6)   # now it is the new one's: no annotation needed
    with pytest.raises(StateOwned):
        _loop(store, OLD)             # and no longer the old one's


def test_local_runs_neither_record_nor_check_an_owner(tmp_path):
    store = LocalStore(tmp_path / "local")
    _loop(store, None, max_trials=3).run()
    assert "owner" not in _state(store)
    assert len(_loop(store, None).applied) == 3
    # an ownerless state (kubenas run, or written before owners) is taken over and recorded
    loop = _loop(store, NEW, max_trials=6)
    assert len(loop.applied) == 3 and loop.run()["applied"] == 6
    assert _state(store)["owner"] == {**NEW, "resumedFrom": None}
    with pytest.raises(StateOwned):
        _loop(store, OLD)
