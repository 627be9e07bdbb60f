import pytest
import torch

from infogan_dist.config import ModelConfig
from infogan_dist.models import build_models, check_shape


@pytest.mark.parametrize("arch, shape", [
    ("mlp", (1, 28, 28)), ("mlp", (3, 32, 32)), ("infogan_mnist", (1, 28, 28)),
    ("dcgan32", (3, 32, 32)), ("dcgan64", (3, 64, 64)),
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
