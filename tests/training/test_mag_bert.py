"""MAG-BERT (a baseline row of TwoStepMSA's, HybridShift's and SKESL's tables): the gate's equations, a BERT
saved to a folder and loaded through ``from_pretrained``, and the shipped config through ``msa fit``."""

from __future__ import annotations

import pytest
import torch
from conftest import REPO, assert_one_line_error, msa_in_process, run_msa

from msa_lightning.batch import MSABatch
from msa_lightning.nn.pretrained import load_model
from msa_lightning.papers.baselines.config import MAGBERTConfig
from msa_lightning.papers.baselines.net import MAGBERT, MultimodalAdaptationGate

CONFIG = REPO / "configs" / "baselines" / "mag_bert_mosi.yaml"


@pytest.fixture(scope="module")
def bert_folder(tmp_path_factory):
    """A tiny BERT saved as a user's checkpoint folder is."""
    folder = tmp_path_factory.mktemp("tiny_bert")
    load_model("tiny-bert").save_pretrained(folder)
    return folder


def test_shift_is_at_most_beta_times_the_text_norm():
    """Eq. 5: alpha = min(||Z|| / ||H|| * beta, 1)."""
    gate = MultimodalAdaptationGate(4, {"a": 3}, beta_shift=0.5, dropout=0.0)
    z = torch.tensor([[[2.0, 0.0, 0.0, 0.0], [2.0, 0.0, 0.0, 0.0]]])
    h = torch.tensor([[[0.0, 10.0, 0.0, 0.0], [0.0, 0.5, 0.0, 0.0]]])
    alpha = gate.shift_scale(z, h)[0, :, 0]
    assert float(alpha[0]) == pytest.approx(2.0 / 10.0 * 0.5, rel=1e-5)  # a large H is scaled to beta ||Z||
    assert float(alpha[1]) == pytest.approx(1.0)  # a small one is clipped at 1: added as is
    assert float((alpha[0] * h[0, 0]).norm()) == pytest.approx(0.5 * float(z[0, 0].norm()), rel=1e-5)


def test_closed_gates_leave_only_the_layer_norm_of_the_text():
    """Eqs. 1-4: ReLU gates at zero make H = 0, so Z' = LayerNorm(Z)."""
    torch.manual_seed(0)
    gate = MultimodalAdaptationGate(8, {"a": 3, "v": 5}, beta_shift=1.0, dropout=0.0).eval()
    for m in ("a", "v"):
        torch.nn.init.zeros_(gate.gate[m].weight)
        torch.nn.init.constant_(gate.gate[m].bias, -1.0)  # ReLU(-1) = 0
    z = torch.randn(2, 6, 8)
    streams = {"a": torch.randn(2, 6, 3), "v": torch.randn(2, 6, 5)}
    assert torch.count_nonzero(gate.displacement(z, streams)) == 0
    torch.testing.assert_close(gate(z, streams), gate.norm(z))
    # open gates do move the states
    torch.nn.init.constant_(gate.gate["a"].bias, 1.0)
    assert not torch.allclose(gate(z, streams), gate.norm(z))


def test_from_a_saved_folder_any_injection_layer(bert_folder):
    saved = load_model(str(bert_folder))
    batch = MSABatch(
        index=torch.arange(3),
        text_ids=torch.randint(5, 100, (3, 7)),
        text_mask=torch.tensor([[1] * 7, [1] * 5 + [0] * 2, [1] * 3 + [0] * 4]),
        text_segment=torch.zeros(3, 7, dtype=torch.long),
        audio=torch.randn(3, 7, 5),
        vision=torch.randn(3, 7, 20),
    )
    layers = saved.config.num_hidden_layers
    for injection in (0, layers):
        net = MAGBERT(MAGBERTConfig(audio_dim=5, vision_dim=20, text_model=str(bert_folder), injection_layer=injection))
        assert torch.equal(net.text.model.embeddings.word_embeddings.weight, saved.embeddings.word_embeddings.weight)
        out = net.eval()(batch)
        assert out.M.shape == (3,) and torch.isfinite(out.M).all()
    audio_only = MAGBERT(MAGBERTConfig(audio_dim=5, vision_dim=20, text_model=str(bert_folder), modalities="a"))
    assert set(audio_only.mag.gate) == {"a"}


@pytest.mark.slow
def test_msa_fit_of_the_shipped_config_and_unaligned_data(
    bert_folder, synthetic_mosi_aligned, synthetic_mosi, cache_dir, tmp_path, capsys
):
    common = [
        "--config",
        CONFIG,
        f"--model.init_args.text_model={bert_folder}",
        "--trainer.max_epochs=1",
        "--data.init_args.num_workers=0",
        "--trainer.enable_progress_bar=false",
    ]
    good = run_msa(
        "fit",
        *common,
        f"--data.init_args.path={synthetic_mosi_aligned}",
        f"--trainer.default_root_dir={tmp_path / 'run'}",
        cache=cache_dir,
        cwd=tmp_path,
    )
    assert good.returncode == 0, good.stderr[-3000:]
    assert (tmp_path / "run" / "msa" / "version_0" / "checkpoints" / "last.ckpt").is_file()

    bad = msa_in_process(  # the same entry point, without another Python start
        capsys,
        "fit",
        *common,
        f"--data.init_args.path={synthetic_mosi}",
        "--data.init_args.aligned=false",
        f"--trainer.default_root_dir={tmp_path / 'bad'}",
        cwd=tmp_path,
        env={"MSA_CACHE_DIR": str(cache_dir)},
    )
    assert_one_line_error(bad, "MAG-BERT needs word-aligned features", "--align words")
    assert not list((tmp_path / "bad").rglob("*.ckpt"))
