"""The recurrent child's network: shapes, parameters, tied embedding, and dropout masks."""

from __future__ import annotations

import torch

from kubenas.trainer.builders.language_model import LanguageModel
from kubenas.trainer.builders.rnn_cell import figure5_cell, nas_cell

torch.set_num_threads(1)


def test_model_shapes_parameters_and_tied_embedding():
    V, E, H = 50, 8, 8
    m = LanguageModel(nas_cell(), V, E, H, layers=2, tie_weights=True)
    assert m.decoder.weight is m.encoder.weight
    cell = 8 * H * (E + H) + 2 * 8 * H                       # W, U and both biases, base 8
    assert m.num_parameters() == V * E + 2 * cell + V      # tied matrix counted once
    logits, state = m.run(torch.randint(0, V, (7, 3)), m.init_state(3))
    assert logits.shape == (7, 3, V) and len(state) == 2 and state[1][0].shape == (3, H)
    untied = LanguageModel(nas_cell(), V, E, H, layers=1, tie_weights=False)
    assert untied.decoder.weight is not untied.encoder.weight


def test_dropout_masks_are_shared_across_time():
    V, E, H, T, N = 40, 12, 12, 6, 4
    m = LanguageModel(figure5_cell(), V, E, H, layers=1, dropout=0.5, recurrent_dropout=0.5).train()
    seen = {}

    def grab_input(module, args):
        seen["x"], seen["mask"] = args[0], args[2]
    m.rnns[0].register_forward_pre_hook(grab_input)
    m.run(torch.randint(0, V, (T, N)), m.init_state(N))
    zeros = seen["x"] == 0                                   # (T, N, E): the input dropout pattern
    assert zeros.any() and (zeros == zeros[0:1]).all()       # the same mask at every step
    assert seen["mask"].shape == (N, H) and (seen["mask"] == 0).any()   # one recurrent mask
    m.eval()
    m.run(torch.randint(0, V, (T, N)), m.init_state(N))
    assert seen["mask"] is None and not (seen["x"] == 0).any()


def test_embedding_dropout_drops_whole_words():
    m = LanguageModel(figure5_cell(), 30, 6, 6, layers=1, embedding_dropout=0.5).train()
    torch.manual_seed(1)
    emb = m._embed(torch.tensor([[3, 3, 3, 4, 4, 4]]).t())   # (6, 1, 6)
    rows = (emb == 0).all(-1).squeeze(1)                      # a dropped word is zero everywhere
    assert rows[:3].tolist() in ([True] * 3, [False] * 3) and rows[3:].tolist() in ([True] * 3, [False] * 3)
