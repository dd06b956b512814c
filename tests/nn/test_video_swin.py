"""Video Swin (nn/video_swin.py): torchvision's swin3d layout and numbers, the official key mapping,
padding, frame masks and the frame-level extractor."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from msa_lightning.errors import MSAError
from msa_lightning.nn.pretrained import PretrainedNotAvailable
from msa_lightning.nn.video_swin import (
    CONFIGS,
    SwinTransformer3d,
    VideoSwinEncoder,
    build_video_swin,
    config_from_state_dict,
    load_swin_state_dict,
    official_to_torchvision,
    shifted_window_mask,
)

FIXTURES = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures"


@pytest.fixture(scope="module")
def reference() -> dict:
    path = FIXTURES / "swin3d_tiny_reference.pt"
    if not path.is_file():
        pytest.skip("../shared/fixtures/swin3d_tiny_reference.pt is not available")
    return torch.load(path, weights_only=False)


def _reference_model(reference) -> SwinTransformer3d:
    c = reference["config"]
    return SwinTransformer3d(
        patch_size=c["patch_size"],
        embed_dim=c["embed_dim"],
        depths=c["depths"],
        num_heads=c["num_heads"],
        window_size=c["window_size"],
        num_classes=c["num_classes"],
        stochastic_depth_prob=c["stochastic_depth_prob"],
    ).eval()


def test_reproduces_torchvision_reference(reference):
    """Strict load under torchvision's names; pooled clip embedding and logits match to ~1e-5 (the
    input's sizes are not multiples of patch or window, and the last stages shrink their windows)."""
    model = _reference_model(reference)
    # the fixed relative position index is computed exactly as the reference computes it
    own = model.state_dict()
    for key in own:
        if key.endswith("relative_position_index"):
            assert torch.equal(own[key], reference["state_dict"][key]), key
    model.load_state_dict(reference["state_dict"], strict=True)
    with torch.no_grad():
        tokens, mask = model.forward_features(reference["input"])
        sequence, pooled = model.pool(tokens)
        logits = model(reference["input"])
    assert mask is None
    assert tokens.shape == (2, 3, 2, 2, 128)  # T 6/2, H 40/4/8 rounded up, W 44/4/8 rounded up
    assert sequence.shape == (2, 3, 128)
    assert (pooled - reference["pooled"]).abs().max().item() < 1e-5
    assert (logits - reference["logits"]).abs().max().item() < 1e-5


def test_tiny_config_is_the_reference_architecture(reference):
    c = reference["config"]
    tiny = CONFIGS["tiny-swin3d"]
    for key in ("patch_size", "embed_dim", "depths", "num_heads", "window_size"):
        expected = list(c[key]) if isinstance(c[key], (list, tuple)) else c[key]
        assert (list(tiny[key]) if isinstance(tiny[key], (list, tuple)) else tiny[key]) == expected, key


def test_full_size_layout_equals_torchvision_swin3d_t():
    path = FIXTURES / "swin3d_t_state_dict_keys.json"
    if not path.is_file():
        pytest.skip("../shared/fixtures/swin3d_t_state_dict_keys.json is not available")
    expected = json.loads(path.read_text())
    model = build_video_swin("swin3d_t", num_classes=400)
    assert [[k, list(v.shape)] for k, v in model.state_dict().items()] == expected


def _to_official(state_dict: dict) -> dict:
    """torchvision names -> the official Video Swin checkpoint's names (written independently of the
    module's mapping, from the official layout: stages hold ``blocks`` and their ``downsample``)."""
    out = {}
    for key, value in state_dict.items():
        m = re.match(r"features\.(\d+)\.(.*)", key)
        if m:
            idx, rest = int(m.group(1)), m.group(2)
            if idx % 2 == 0:
                block, tail = rest.split(".", 1)
                tail = tail.replace("mlp.0.", "mlp.fc1.").replace("mlp.3.", "mlp.fc2.")
                key = f"layers.{idx // 2}.blocks.{block}.{tail}"
            else:
                key = f"layers.{idx // 2}.downsample.{rest}"
        key = "cls_head.fc_cls." + key[len("head.") :] if key.startswith("head.") else "backbone." + key
        out[key] = value
    return out


def test_official_checkpoint_loads_through_the_key_mapping(reference, tmp_path):
    official = _to_official(reference["state_dict"])
    assert "backbone.layers.1.downsample.reduction.weight" in official
    assert "backbone.layers.0.blocks.1.mlp.fc2.bias" in official
    assert official_to_torchvision(official).keys() == reference["state_dict"].keys()
    # an mmaction checkpoint file wraps the weights next to meta data; the index buffer may be absent
    weights = {k: v for k, v in official.items() if not k.endswith("relative_position_index")}
    path = tmp_path / "swin_tiny_official.pth"
    torch.save({"meta": {"epoch": 30, "hook_msgs": {"best_score": np.float64(0.78)}}, "state_dict": weights}, path)
    model = build_video_swin("tiny-swin3d", checkpoint=path, num_classes=5).eval()
    with torch.no_grad():
        logits = model(reference["input"])
    assert (logits - reference["logits"]).abs().max().item() < 1e-5
    # a headless extractor ignores the classification head of the same file
    headless = build_video_swin("tiny-swin3d", checkpoint=path).eval()
    assert headless.head is None
    with torch.no_grad():
        pooled = headless.pool(*headless.forward_features(reference["input"]))[1]
    assert (pooled - reference["pooled"]).abs().max().item() < 1e-5


def test_weights_of_another_architecture_are_refused(reference, tmp_path):
    path = tmp_path / "tiny.pth"
    torch.save(reference["state_dict"], path)
    with pytest.raises(MSAError, match=r"tiny.pth.*do not fit.*missing.*features\.2\.1"):
        build_video_swin("tiny-swin3d", checkpoint=path, depths=(2, 2, 2, 1))
    with pytest.raises(PretrainedNotAvailable, match="no_such.pth"):
        build_video_swin("tiny-swin3d", checkpoint=tmp_path / "no_such.pth")
    (tmp_path / "broken.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(MSAError, match="cannot read .*broken.pth"):
        build_video_swin("tiny-swin3d", checkpoint=tmp_path / "broken.pth")
    with pytest.raises(MSAError, match="unknown Video Swin architecture 'swin3d_x'"):
        build_video_swin("swin3d_x")
    model = build_video_swin("tiny-swin3d")
    with pytest.raises(MSAError, match="with another shape"):
        load_swin_state_dict(model, {k: v[..., :1] if k == "norm.weight" else v for k, v in model.state_dict().items()})


def test_shifted_window_mask_separates_wrapped_regions():
    """Padded map 4 along time, window 2, shift 1: the last window holds the last row and the wrapped
    first row, which must not see each other; unshifted axes add no mask."""
    mask = shifted_window_mask((4, 3, 3), (2, 3, 3), (1, 0, 0), "cpu")
    assert mask.shape == (2, 18, 18)
    assert (mask[0] == 0).all()  # the first window has no wrapped tokens
    first, second = torch.arange(9), torch.arange(9, 18)
    assert (mask[1][first][:, second] == -100).all() and (mask[1][first][:, first] == 0).all()


def test_frame_mask_padding_changes_nothing():
    torch.manual_seed(0)
    model = build_video_swin("tiny-swin3d", num_classes=3).eval()
    video = torch.randn(2, 3, 8, 24, 28)
    frame_mask = torch.ones(2, 8, dtype=torch.bool)
    frame_mask[1, 5:] = False
    with torch.no_grad():
        plain = model.pool(*model.forward_features(video))
        all_valid = model.pool(*model.forward_features(video, torch.ones(2, 8, dtype=torch.bool)))
        masked_tokens, token_mask = model.forward_features(video, frame_mask)
        masked = model.pool(masked_tokens, token_mask)
        changed_video = video.clone()
        changed_video[1, :, 5:] = torch.randn(3, 3, 24, 28) * 10
        changed = model.pool(*model.forward_features(changed_video, frame_mask))
    # an all-true mask is the reference computation
    torch.testing.assert_close(all_valid[1], plain[1], rtol=0, atol=1e-6)
    # frame 5 is padding: tokens 0-2 (frames 0-5) are valid, token 3 is not
    assert token_mask.tolist() == [[True] * 4, [True, True, True, False]]
    torch.testing.assert_close(changed[0][1, :3], masked[0][1, :3], rtol=0, atol=0)
    torch.testing.assert_close(changed[1], masked[1], rtol=0, atol=0)
    assert torch.allclose(masked[1][1], masked[0][1, :3].mean(0), atol=1e-6)
    # the unpadded clip of the batch is untouched by its neighbour's mask
    torch.testing.assert_close(masked[1][0], plain[1][0], rtol=0, atol=1e-6)
    # without the mask the padded frames do leak into the clip embedding (the mask is what prevents it)
    with torch.no_grad():
        leaked = model.pool(*model.forward_features(changed_video))[1]
    assert not torch.allclose(leaked[1], plain[1][1], atol=1e-4)


def test_encoder_from_uint8_frames_frozen_and_trainable():
    torch.manual_seed(0)
    frames = torch.randint(0, 256, (2, 5, 3, 32, 32), dtype=torch.uint8)
    mask = torch.tensor([[True] * 5, [True, True, True, False, False]])
    frozen = VideoSwinEncoder("tiny-swin3d", finetune=False)
    assert not any(p.requires_grad for p in frozen.parameters()) and not frozen.model.training
    sequence, seq_mask, pooled = frozen(frames, mask)
    assert sequence.shape == (2, 3, frozen.hidden_size) and pooled.shape == (2, frozen.hidden_size)
    assert seq_mask.tolist() == [[True] * 3, [True, True, False]]
    again = frozen(frames, mask)
    assert torch.equal(again[2], pooled)  # eval mode: deterministic
    trainable = VideoSwinEncoder("tiny-swin3d", finetune=True)
    trainable(frames, mask)[2].pow(2).sum().backward()
    assert trainable.model.patch_embed.proj.weight.grad.abs().sum() > 0
    assert trainable.model.features[0][0].attn.relative_position_bias_table.grad.abs().sum() > 0


def test_gradient_checkpointing_gives_the_same_gradients(monkeypatch):
    calls = []
    real = torch.utils.checkpoint.checkpoint
    monkeypatch.setattr(torch.utils.checkpoint, "checkpoint", lambda *a, **k: calls.append(1) or real(*a, **k))
    torch.manual_seed(0)
    plain = build_video_swin("tiny-swin3d", num_classes=2).train()
    checkpointed = build_video_swin("tiny-swin3d", num_classes=2, gradient_checkpointing=True).train()
    checkpointed.load_state_dict(plain.state_dict())
    video = torch.randn(2, 3, 4, 24, 24)
    for model in (plain, checkpointed):
        model(video).pow(2).sum().backward()
    for (name, a), (_, b) in zip(plain.named_parameters(), checkpointed.named_parameters()):
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-4, atol=1e-6, msg=name)
    assert len(calls) == sum(CONFIGS["tiny-swin3d"]["depths"])  # every block of the second model, once


def test_architecture_read_from_the_checkpoint(reference, tmp_path):
    config = config_from_state_dict(reference["state_dict"])
    c = reference["config"]
    assert config == dict(
        patch_size=tuple(c["patch_size"]),
        embed_dim=c["embed_dim"],
        depths=tuple(c["depths"]),
        num_heads=tuple(c["num_heads"]),
        window_size=tuple(c["window_size"]),
        num_classes=5,
    )
    assert config_from_state_dict(_to_official(reference["state_dict"]))["depths"] == (2, 1, 2, 1)
    with torch.device("meta"):  # shapes only: no memory for the 88M weights
        full = config_from_state_dict(build_video_swin("swin3d_b", num_classes=400).state_dict())
    assert full["embed_dim"] == 128 and full["depths"] == (2, 2, 18, 2) and full["window_size"] == (8, 7, 7)
    path = tmp_path / "some_swin.pth"
    torch.save(reference["state_dict"], path)
    model = build_video_swin("auto", checkpoint=path, num_classes=5).eval()
    with torch.no_grad():
        assert (model(reference["input"]) - reference["logits"]).abs().max().item() < 1e-5
    with pytest.raises(MSAError, match="'auto' needs a checkpoint"):
        build_video_swin("auto")
