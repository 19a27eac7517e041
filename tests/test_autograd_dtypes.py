"""bf16 on CPU, gradients, and stochastic depth (DropPath) against transformers."""
from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

import segformer_lite as sl
from hf_reference import hf_config, images, rel_err

SIZE = (45, 83)


@pytest.fixture(scope="module")
def pair(hf_b0, one_thread):
    return hf_b0, sl.from_transformers(hf_b0)


@pytest.mark.parametrize("return_attention", [False, True], ids=["fused", "eager"])
def test_bfloat16_forward_on_cpu(pair, return_attention):
    hf, ours = pair
    x = images(2, 3, *SIZE, seed=1)
    model = copy.deepcopy(ours).to(torch.bfloat16)
    with torch.no_grad():
        ref = hf(x, output_hidden_states=True).hidden_states  # transformers in float32
        out = model(x.to(torch.bfloat16), return_attention=return_attention)
    feats = out[0] if return_attention else out
    if return_attention:
        assert all(a.dtype == torch.bfloat16 and torch.isfinite(a).all() for a in out[1])
    for r, f in zip(ref, feats):
        assert f.dtype == torch.bfloat16 and torch.isfinite(f).all()
        assert rel_err(r, f.float()) < 5e-2  # bf16 keeps ~3 significant digits: ~1e-2 measured


def test_bfloat16_model_refuses_float32_images(pair):
    model = copy.deepcopy(pair[1]).to(torch.bfloat16)
    with pytest.raises(TypeError, match="torch.bfloat16.*torch.float32"):
        model(images(1, 3, *SIZE))


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    # rate 0: a randomly dropped branch would leave its weights without gradient this step
    model = sl.MixTransformer(dataclasses.replace(sl.mit_config("b0"), drop_path_rate=0.0)).train()
    x = images(2, 3, *SIZE, seed=2)
    feats = model(x)
    loss = sum((f * torch.randn(f.shape, generator=torch.Generator().manual_seed(i))).mean()
               for i, f in enumerate(feats))
    loss.backward()
    params = dict(model.named_parameters())
    assert len(params) > 100
    no_grad = [n for n, p in params.items() if p.grad is None]
    assert not no_grad
    zero = [n for n, p in params.items() if not (p.grad.abs() > 0).any()]
    assert not zero
    assert all(torch.isfinite(p.grad).all() for p in params.values())


def test_input_gradients_match_transformers(pair):
    """Backward through the fused attention equals transformers' eager backward."""
    hf, ours = pair
    weights = [torch.randn(c, generator=torch.Generator().manual_seed(c))[:, None, None]
               for c in (32, 64, 160, 256)]
    grads = []
    for run in (lambda x: hf(x, output_hidden_states=True).hidden_states, ours,
                lambda x: ours(x, return_attention=True)[0]):
        x = images(2, 3, *SIZE, seed=3).requires_grad_()
        sum((f * w).sum() for f, w in zip(run(x), weights)).backward()
        grads.append(x.grad)
    assert rel_err(grads[0], grads[1]) < 1e-5
    assert rel_err(grads[0], grads[2]) < 1e-5


def test_drop_path_rates_grow_linearly_as_in_transformers():
    """A model built from the named config (not converted) has transformers' stochastic-depth
    schedule: rate drop_path_rate * i / (n_blocks - 1) for block i of all n_blocks."""
    from transformers import SegformerModel

    with torch.device("meta"):  # only the module structure is needed
        hf = SegformerModel(hf_config("b2"))
    ref = [getattr(layer.drop_path, "drop_prob", 0.0) for stage in hf.stages for layer in stage.blocks]
    model = sl.MixTransformer(sl.mit_config("b2"))
    got = [block.drop_path.p for stage in model.stages for block in stage.blocks]
    assert len(got) == len(ref) == 3 + 4 + 6 + 3
    assert got == pytest.approx(ref, abs=1e-7)
    assert got[0] == 0.0 and got[-1] == pytest.approx(0.1)


def test_drop_path_statistics():
    """Per sample: the branch is dropped with probability p, else scaled by 1 / (1 - p), so the
    expectation is unchanged; identity in eval mode."""
    drop = sl.DropPath(0.25).train()
    torch.manual_seed(0)
    out = drop(torch.ones(20000, 3, 2))
    per_sample = out[:, 0, 0]
    assert (out == per_sample[:, None, None]).all()  # one decision per sample
    assert per_sample.unique().tolist() == [0.0, pytest.approx(1 / 0.75)]
    assert (per_sample == 0).float().mean().item() == pytest.approx(0.25, abs=0.015)
    assert out.mean().item() == pytest.approx(1.0, abs=0.03)
    x = torch.randn(4, 5)
    assert torch.equal(drop.eval()(x), x)


def test_train_mode_drops_paths_eval_mode_does_not(pair):
    _, ours = pair
    model = copy.deepcopy(ours)
    x = images(4, 3, *SIZE, seed=4)
    with torch.no_grad():
        ref = model.eval()(x)
        assert all(torch.equal(a, b) for a, b in zip(ref, model(x)))  # eval is deterministic
        torch.manual_seed(1)
        train = model.train()(x)
        assert any(not torch.allclose(a, b) for a, b in zip(ref, train))
        no_drop = sl.MixTransformer(dataclasses.replace(model.config, drop_path_rate=0.0))
        no_drop.load_state_dict(model.state_dict())
        # with the rate at 0 train mode changes nothing (MiT has no dropout elsewhere)
        assert all(torch.equal(a, b) for a, b in zip(ref, no_drop.train()(x)))
