"""``--init-from``: training can start from an earlier model's shipped weights (fine-tuning at a new size)."""

from __future__ import annotations

import torch

from analysis.ml import LABELS
from analysis.ml.model import build_model, load_init_weights


def test_artifact_weights_load_as_float32_into_a_model_of_another_input_size(random_artifact) -> None:  # noqa: ANN001
    state = load_init_weights(random_artifact)  # the folder: its weights.pt (fp16)
    assert all(v.dtype == torch.float32 for v in state.values() if v.is_floating_point())
    model = build_model(len(LABELS), input_size=96, pretrained=False)  # the artefact was 64 px
    model.load_state_dict(state)  # strict: every tensor matches
    assert torch.equal(model.head.bias, torch.full_like(model.head.bias, 2.0))  # the fixture's head, not random


def test_a_checkpoint_loads_too(random_artifact, tmp_path) -> None:  # noqa: ANN001
    state = load_init_weights(random_artifact)
    torch.save({"model": state, "epoch": 3}, tmp_path / "best.pt")
    again = load_init_weights(tmp_path / "best.pt")
    assert again.keys() == state.keys() and all(torch.equal(again[k], state[k]) for k in state)
