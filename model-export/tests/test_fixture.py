"""The committed fixture bundle and goldens are exactly what the exporter writes today."""

from __future__ import annotations

import filecmp

from caer_export.fixture import write_fixture

from conftest import REPO


def test_committed_fixture_does_not_drift(tmp_path):
    golden = REPO / "tests" / "golden"
    write_fixture(tmp_path)
    ours = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    committed = sorted(p.relative_to(golden) for p in golden.rglob("*") if p.is_file())
    assert ours == committed
    drifted = [str(p) for p in ours if not filecmp.cmp(tmp_path / p, golden / p, shallow=False)]
    assert not drifted, f"regenerate with `caer-export fixture`: drifted {drifted}"


def test_fixture_bundle_is_small():
    bundle = REPO / "tests" / "golden" / "bundle"
    assert sum(p.stat().st_size for p in bundle.iterdir()) < 5_000_000
