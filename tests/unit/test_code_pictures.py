"""The traversal picture with one row per continuous code (pictures.py): each row sweeps
its own code, and the rows are labelled with the factor the code captures best."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from infogan_dist.config import load_config
from infogan_dist.latent import LatentSpace
from infogan_dist.pictures import code_grid, factor_labels, save_pictures


class CodesAsPixels(nn.Module):
    """A generator whose 1x4x4 image shows the continuous codes in its first pixels."""

    def __init__(self, space: LatentSpace):
        super().__init__()
        self.k = space.num_continuous
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x):
        image = torch.zeros(len(x), 16)
        image[:, : self.k] = x[:, -self.k:] * self.scale
        return image.view(-1, 1, 4, 4)


@pytest.fixture
def space():
    return LatentSpace(load_config(None, ["latent.categorical=[2]", "latent.continuous=3",
                                          "latent.noise_dim=2"]).latent)


def test_each_row_sweeps_its_own_code_over_the_prior(space):
    grid = code_grid(CodesAsPixels(space), space, seed=0)  # (x + 1) / 2 of the codes
    codes = (grid.view(3, 10, 16)[:, :, :3] * 2 - 1)  # rows, columns, code values
    sweep = torch.linspace(-1, 1, 10)
    for j in range(3):
        assert torch.allclose(codes[j, :, j], sweep, atol=1e-6)
        others = [i for i in range(3) if i != j]
        assert torch.all(codes[j][:, others] == 0)


def test_factor_labels_name_the_factor_with_the_largest_share():
    report = {"codes": ["c1", "c2"], "factors": ["shape", "scale", "pos_x"],
              "mi_normalised": [[0.1, 0.05, 0.71], [0.3, 0.2, 0.01]]}
    assert factor_labels(report) == {"c1": "pos_x 0.71", "c2": "shape 0.30"}


def test_the_codes_picture_has_one_labelled_row_per_continuous_code(space, tmp_path):
    labels = {"c2": "pos_x 0.71", "c3": "scale 0.52", "c4": "shape 0.40"}
    paths = save_pictures(CodesAsPixels(space), space, 0, tmp_path / "step.png",
                          code_labels=labels)
    codes = tmp_path / "step-codes.png"
    assert paths[-1] == codes
    picture = Image.open(codes)
    assert picture.text["rows"].splitlines() == ["c2 pos_x 0.71", "c3 scale 0.52",
                                                 "c4 shape 0.40"]
    grid_w, row_h = 10 * 5 + 1, 5  # 10 images of 4 px and their 1-px padding per row
    assert picture.height == 3 * row_h + 1 and picture.width > grid_w
    margin = np.asarray(picture.convert("L"))[:, : picture.width - grid_w]
    assert (margin < 128).any(), "no label drawn"
    plain = save_pictures(CodesAsPixels(space), space, 0, tmp_path / "plain.png")[-1]
    assert Image.open(plain).text["rows"].splitlines() == ["c2", "c3", "c4"]
    assert Image.open(plain).width < picture.width  # the factor names widen the margin
