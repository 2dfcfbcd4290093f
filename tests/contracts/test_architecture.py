import pytest

from kubenas.contracts import Architecture, ContractError, ResultRecord

CNN = {"apiVersion": "kubenas.dev/v1", "kind": "Architecture", "space": "cnn", "tokens": [1, 2, 0, 3],
       "spec": {"layers": [
           {"name": "layer_1", "type": "conv", "inputs": ["input"], "filter_height": 3,
            "filter_width": 5, "stride_height": 1, "stride_width": 1, "num_filters": 24},
           {"name": "layer_2", "type": "conv", "inputs": ["input", "layer_1"], "filter_height": 1,
            "filter_width": 1, "num_filters": 36}]}}


def test_round_trip_json():
    arch = Architecture.from_dict(CNN)
    again = Architecture.from_json(arch.to_json())
    assert again == arch and again.to_dict()["spec"] == CNN["spec"]
    assert arch.key() == again.key()


@pytest.mark.parametrize("mutate,where", [
    (lambda d: d["spec"]["layers"][1]["inputs"].append("layer_9"), "architecture.spec.layers[1].inputs[2]"),
    (lambda d: d["spec"]["layers"][0].update(filter_height=0), "architecture.spec.layers[0].filter_height"),
    (lambda d: d["spec"]["layers"][1].update(name="layer_1"), "architecture.spec.layers[1].name"),
    (lambda d: d["spec"]["layers"][0].update(type="lstm"), "architecture.spec.layers[0].type"),
    (lambda d: d["spec"]["layers"][0].pop("num_filters"), "architecture.spec.layers[0].num_filters"),
    (lambda d: d.update(space="mlp"), "architecture.space"),
    (lambda d: d.update(apiVersion="kubenas.dev/v9"), "architecture.apiVersion"),
])
def test_validation_names_the_field(mutate, where):
    import copy
    doc = copy.deepcopy(CNN)
    mutate(doc)
    with pytest.raises(ContractError) as err:
        Architecture.from_dict(doc)
    assert str(err.value).startswith(where + ":")


def test_rnn_cell_and_nb201_specs_validate():
    cell = {"base": 2, "nodes": [{"combine": "add", "activation": "tanh"},
                                 {"combine": "elem_mult", "activation": "relu"},
                                 {"combine": "elem_mult", "activation": "sigmoid"}],
            "cell_inject": {"node": 0, "combine": "add", "activation": "relu"}, "cell_index": 1}
    Architecture.from_dict({"space": "rnn_cell", "spec": cell})
    with pytest.raises(ContractError, match=r"spec.cell_index: must be a non-root node index"):
        Architecture.from_dict({"space": "rnn_cell", "spec": {**cell, "cell_index": 2}})
    with pytest.raises(ContractError, match=r"spec.edges"):
        Architecture.from_dict({"space": "nasbench201", "spec": {"edges": {"1<-0": "conv_3x3"}}})


def test_result_record_rules():
    arch = Architecture.from_dict(CNN)
    ok = ResultRecord(experiment="e", trial_id="e-00001", architecture=arch, status="succeeded",
                      reward=0.5, metrics=[{"epoch": 1, "train_loss": 1.0, "val_acc": 0.8}])
    again = ResultRecord.from_json(ok.to_json())
    assert again.reward == 0.5 and again.metrics[0].val_acc == 0.8 and again.architecture == arch
    with pytest.raises(ContractError, match="succeeded result needs a finite reward"):
        ResultRecord(experiment="e", trial_id="t", architecture=arch, status="succeeded", reward=float("nan"))
    with pytest.raises(ContractError, match="failed result must say why"):
        ResultRecord(experiment="e", trial_id="t", architecture=arch, status="failed")
    with pytest.raises(ContractError, match="result.status"):
        ResultRecord(experiment="e", trial_id="t", architecture=arch, status="done", reward=1.0)
