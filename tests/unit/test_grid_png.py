"""pictures.save_grid writes the PNG bytes torchvision's save_image wrote, without
importing torchvision (issue 31, item 6: the import cost seconds of start-up)."""

import io
import subprocess
import sys

import pytest
import torch

from infogan_dist.pictures import save_grid


def _png(write) -> bytes:
    buf = io.BytesIO()
    write(buf)
    return buf.getvalue()


@pytest.mark.parametrize("n,channels,nrow", [(1, 1, 1), (12, 1, 5), (7, 3, 3), (20, 1, 10)])
def test_save_grid_bytes_equal_torchvision(n, channels, nrow):
    from torchvision.utils import save_image

    g = torch.Generator().manual_seed(n)
    # a little outside [0, 1] too: both clamp
    images = torch.rand(n, channels, 9, 7, generator=g) * 1.2 - 0.1
    ours = _png(lambda f: save_grid(images, f, nrow=nrow, padding=1, format="PNG"))
    theirs = _png(lambda f: save_image(images, f, nrow=nrow, padding=1, format="PNG"))
    assert ours == theirs


def test_sample_and_pictures_do_not_import_torchvision():
    code = ("import sys, infogan_dist.sample, infogan_dist.pictures, infogan_dist.explore; "
            "print(sorted(m for m in sys.modules if m.startswith('torchvision')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]"
