"""Fixtures of the integration tests.

`slurm_cluster`: a private Slurm cluster on localhost (munged, slurmctld, two slurmd
nodes), started once per session by the first test that asks for it, stopped at the end.
Fails (never skips) where Slurm/munge are missing or the tests do not run as root:
`launch/setup.sh` installs the packages; without root, deselect with `-m "not slurm"`.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.slurm_cluster import SlurmCluster, SlurmError, missing_requirements


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[SlurmCluster]:
    reason = missing_requirements()
    if reason:
        pytest.fail(f"cannot start the test Slurm cluster: {reason} (run launch/setup.sh as "
                    'root, or deselect these tests with -m "not slurm")', pytrace=False)
    cluster = SlurmCluster.create()
    try:
        cluster.start()
    except SlurmError as e:
        cluster.keep_files = True  # the logs stay for a post-mortem
        cluster.stop()
        pytest.fail(f"the test Slurm cluster did not start (files kept in {cluster.root}):\n{e}",
                    pytrace=False)
    try:
        yield cluster
    finally:
        cluster.stop()
