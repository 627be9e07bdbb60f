import pytest
import torch

from infogan_dist.config import ModelConfig
from infogan_dist.models import build_models, check_shape


@pytest.mark.parametrize("arch, shape", [
    ("mlp", (1, 28, 28)), ("mlp", (3, 32, 32)), ("infogan_mnist", (1, 28, 28)),
    ("dcgan32", (3, 32, 32)), ("dcgan64", (3, 64, 64)), ("infogan_cr64", (1, 64, 64)),
])
@pytest.mark.parametrize("batch", [1, 5])
def test_shapes(arch, shape, batch):
    G, D = build_models(ModelConfig(arch=arch, width=0.25), input_dim=20, q_dim=14,
                        image_shape=shape)
    G.eval()
    D.eval()  # batch of one: BatchNorm needs eval mode
    x = G(torch.randn(batch, 20))
    assert x.shape == (batch, *shape) and x.abs().max() <= 1
    adv, q = D(x)
    assert adv.shape == (batch,) and q.shape == (batch, 14)
    adv, q = D(x, head="adv")
    assert q is None
    adv, q = D(x, head="q")
    assert adv is None


def test_no_batchnorm_eps_bug_and_no_softmax():
    G, D = build_models(ModelConfig(arch="infogan_mnist"), 74, 12, (1, 28, 28))
    for m in [*G.modules(), *D.modules()]:
        assert not isinstance(m, (torch.nn.Softmax, torch.nn.Sigmoid))
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            assert m.eps == 1e-5 and m.momentum == 0.1


def test_check_shape():
    assert check_shape("infogan_mnist", (1, 28, 28)) is None
    assert "32x32" in check_shape("dcgan32", (1, 28, 28))
    assert check_shape("mlp", (3, 17, 5)) is None


def test_infogan_cr64_is_the_papers_network():
    """G FC 128 -> FC 4x4x64 -> deconv 64, 32, 32 -> 1; D conv 32, 32, 64, 64 -> FC 128,
    no BatchNorm in D; Q FC 128 -> codes (InfoGAN-CR, the authors' dSprites code)."""
    G, D = build_models(ModelConfig(arch="infogan_cr64"), 10, 5, (1, 64, 64))
    kinds = (torch.nn.Linear, torch.nn.ConvTranspose2d, torch.nn.Conv2d)
    widths = [getattr(m, "out_features", None) or m.out_channels
              for m in G.modules() if isinstance(m, kinds)]
    assert widths == [128, 1024, 64, 32, 32, 1]
    assert [m.out_channels for m in D.trunk if isinstance(m, torch.nn.Conv2d)] == [32, 32, 64, 64]
    assert [m.out_features for m in D.trunk if isinstance(m, torch.nn.Linear)] == [128]
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in D.modules())
    assert [m.out_features for m in D.q if isinstance(m, torch.nn.Linear)] == [128, 5]


def test_spectral_norm_normalizes_every_layer_of_d_and_only_d():
    cfg = ModelConfig(arch="infogan_cr64", width=0.25, spectral_norm=True)
    G, D = build_models(cfg, 10, 5, (1, 64, 64))
    layers = [m for m in D.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    assert layers and all(hasattr(m, "parametrizations") for m in layers)
    assert not any(hasattr(m, "parametrizations") for m in G.modules())
    assert any(k.endswith("parametrizations.weight.0._u") for k in D.state_dict())
    D.train()
    with torch.no_grad():
        for _ in range(30):  # power iterations converge on the largest singular value
            D(torch.randn(2, 1, 64, 64))
    for m in layers:
        sigma = torch.linalg.matrix_norm(m.weight.detach().flatten(1), ord=2)
        assert abs(float(sigma) - 1) < 0.05, (m, float(sigma))
    plain = build_models(ModelConfig(arch="infogan_cr64", width=0.25), 10, 5, (1, 64, 64))[1]
    big = max(float(torch.linalg.matrix_norm(m.weight.detach().flatten(1), ord=2))
              for m in plain.modules() if isinstance(m, torch.nn.Linear))
    assert big != 1.0 and not any(hasattr(m, "parametrizations") for m in plain.modules())
