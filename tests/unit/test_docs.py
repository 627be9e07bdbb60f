"""The docs site: the generated config reference is current, and the site builds in
strict mode (a broken link, anchor or missing page fails), as `make docs` builds it."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from infogan_dist import reference
from tests.helpers import ROOT


def test_config_reference_is_current():
    page = (ROOT / reference.PAGE).read_text()
    assert reference.render(page) == page, (
        f"{reference.PAGE} is stale (the schema, a comment or a registry changed); "
        f"regenerate it with: {reference.REGENERATE}")


def test_reference_rows_come_from_the_schema_source():
    """Type, default, allowed values and the comment above and beside each field."""
    rows = {r.key: r for r in reference.rows()}
    assert rows["train.precision"].allowed == ["no", "bf16", "fp16"]
    assert rows["train.precision"].type == "str"
    assert {"memory", "stream"} <= set(rows["data.mode"].allowed)
    assert {"real_mi", "real_iic"} <= set(rows["loss.extra"].allowed)
    assert rows["optim.betas"].default == "[0.5, 0.999]"
    assert rows["data.eval_shards"].default == '""'
    # a comment on the lines above, then the one on the field's line
    assert rows["train.compile"].comment.startswith("GPU options")
    assert rows["train.compile"].comment.endswith("(Module.compile, in place)")


def test_field_comments_above_and_beside():
    source = textwrap.dedent('''
        @dataclass
        class A:
            x: int = 1  # beside x
            # above y,
            # two lines
            y: list[int] = field(
                default_factory=list)  # beside y's second line

            z: int = 0
        ''')
    assert reference.field_comments(source) == {
        ("A", "x"): "beside x", ("A", "y"): "above y, two lines beside y's second line",
        ("A", "z"): ""}


def test_docs_build_in_strict_mode(tmp_path):
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    out = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict",
                          "-d", str(tmp_path / "site")], cwd=ROOT, env=env,
                         capture_output=True, text=True)
    assert out.returncode == 0, f"mkdocs build --strict failed:\n{out.stdout}{out.stderr}"
    assert (tmp_path / "site" / "reference" / "config.html").exists()
