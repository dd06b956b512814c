"""MulT (nn/mult.py): the six cross-modal and three self-attention transformers, padding, positions,
and a run on a standard feature file."""

from __future__ import annotations

import pytest
import torch

from msa_lightning.errors import DataError
from msa_lightning.nn.mult import MulT, sinusoidal_positions

DIMS = (12, 5, 7)


def _inputs(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    lengths = {"l": torch.tensor([9, 5, 7]), "a": torch.tensor([11, 4, 8]), "v": torch.tensor([6, 10, 3])}
    sizes = {"l": 9, "a": 11, "v": 10}
    xs = {m: torch.randn(3, sizes[m], d, generator=g) for m, d in zip("lav", DIMS)}
    masks = {m: torch.arange(sizes[m])[None] < lengths[m][:, None] for m in "lav"}
    return xs, masks


def _run(model, xs, masks):
    return model(xs["l"], xs["a"], xs["v"], masks["l"], masks["a"], masks["v"])


def _model(**kwargs) -> MulT:
    torch.manual_seed(0)
    return MulT(DIMS, dim=8, num_heads=2, layers=2, **kwargs).eval()


def test_structure_and_shapes():
    model = _model()
    assert sorted(model.cross) == ["a_with_l", "a_with_v", "l_with_a", "l_with_v", "v_with_a", "v_with_l"]
    assert sorted(model.memory) == ["a", "l", "v"] and len(model.memory["l"].layers) == 3  # max(layers, 3)
    xs, masks = _inputs()
    out = _run(model, xs, masks)
    assert out["fused"].shape == (3, 48) and model.out_dim == 48
    assert all(out[m].shape == (3, 16) for m in "lav")
    assert out["sequences"]["a"].shape == (3, 11, 16)
    # each modality's vector is its memory transformer's output at the last valid step
    assert torch.equal(out["a"][1], out["sequences"]["a"][1, 3])


@pytest.mark.parametrize("positional_embedding", [True, False])
@pytest.mark.parametrize("kernel_sizes", [(1, 1, 1), (3, 1, 3)])
def test_padded_frames_do_not_change_outputs(positional_embedding, kernel_sizes):
    model = _model(positional_embedding=positional_embedding, kernel_sizes=kernel_sizes)
    xs, masks = _inputs()
    with torch.no_grad():
        out = _run(model, xs, masks)
        changed = {m: torch.where(masks[m][..., None], xs[m], torch.randn_like(xs[m]) * 50) for m in "lav"}
        out2 = _run(model, changed, masks)
        # sample 1 alone, cut to its own lengths (no padding at all), gives the same result
        alone = {m: xs[m][1:2, : int(masks[m][1].sum())] for m in "lav"}
        out_alone = _run(model, alone, {m: None for m in "lav"})
    torch.testing.assert_close(out2["fused"], out["fused"], rtol=0, atol=1e-5)
    torch.testing.assert_close(out_alone["fused"][0], out["fused"][1], rtol=0, atol=1e-5)
    # without masks the padding is attended to and changes the result: the masks are what protect it
    with torch.no_grad():
        unmasked = model(changed["l"], changed["a"], changed["v"])
    assert not torch.allclose(unmasked["fused"][1], out["fused"][1], atol=1e-3)


def test_positional_embedding_switch():
    with_pos, without = _model(positional_embedding=True), _model(positional_embedding=False)
    without.load_state_dict(with_pos.state_dict())  # same weights: positions are not parameters
    xs, masks = _inputs()
    with torch.no_grad():
        assert not torch.allclose(_run(with_pos, xs, masks)["fused"], _run(without, xs, masks)["fused"], atol=1e-4)
    pe = sinusoidal_positions(4, 6)
    assert pe.shape == (4, 6)
    torch.testing.assert_close(pe[0, :3], torch.sin(torch.tensor([1.0, 1e-2, 1e-4])))  # position 1, 10000^(-i/2)
    torch.testing.assert_close(pe[2, 3:], torch.cos(torch.tensor([3.0, 3e-2, 3e-4])))


def test_gradients_reach_every_transformer():
    model = _model()
    model.train()
    xs, masks = _inputs()
    _run(model, xs, masks)["fused"].pow(2).mean().backward()
    for name, block in list(model.cross.items()) + list(model.memory.items()):
        grad = block.layers[0].attn.in_proj_weight.grad
        assert grad is not None and grad.abs().sum() > 0, name
    assert all(p.grad is not None for p in model.proj.parameters())


def test_too_short_for_the_kernel_is_reported():
    model = _model(kernel_sizes=(1, 5, 1))
    xs, masks = _inputs()
    with pytest.raises(DataError, match="'a' sequences have 3 frames, fewer than the kernel size 5"):
        model(xs["l"], xs["a"][:, :3], xs["v"])


def test_runs_on_a_standard_feature_file(synthetic_mosi, tmp_path):
    from msa_lightning.data.datamodule import MSADataModule
    from msa_lightning.nn.text_encoder import TextEncoder

    dm = MSADataModule(str(synthetic_mosi), dataset="mosi", batch_size=4, cache_dir=str(tmp_path))
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    facts = dm.data_facts()
    torch.manual_seed(0)
    text = TextEncoder("tiny-bert", finetune=False)
    model = MulT((text.hidden_size, facts.audio_dim, facts.vision_dim), dim=8, num_heads=2, layers=1).eval()
    with torch.no_grad():
        hidden = text(batch.text_ids, batch.text_mask, batch.text_segment).last_hidden_state
        out = model.forward_batch(batch, text=hidden)
        # frames past audio_lengths are padding: overwriting them changes nothing
        batch.audio[torch.arange(batch.audio.shape[1])[None] >= batch.audio_lengths[:, None]] = 7.0
        again = model.forward_batch(batch, text=hidden)
    assert out["fused"].shape == (len(batch), 48) and torch.isfinite(out["fused"]).all()
    torch.testing.assert_close(again["fused"], out["fused"], rtol=0, atol=1e-5)
    with pytest.raises(DataError, match="MulT needs text features"):
        model.forward_batch(batch)  # the synthetic file has no precomputed text features
