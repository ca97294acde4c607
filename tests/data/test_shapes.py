"""Shapes: procedural generator, CGAL loader (real package or a generated stand-in), pairs."""

import io
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from beyondgd.data import (
    CGAL_DEFAULT_PATH,
    DataNotFoundError,
    Mesh,
    cgal_mesh_dir,
    load_cgal_meshes,
    make_procedural_shape,
    make_registration_pairs,
    procedural_shapes,
)
from beyondgd.registration import geodesic_error

# A tiny non-symmetric closed mesh in OFF format (an irregular tetrahedron, doubled up so that
# min_faces can be exercised).
TETRA_OFF = """OFF
4 4 0
0 0 0
1.0 0 0
0 0.6 0
0 0 0.3
3 0 2 1
3 0 1 3
3 0 3 2
3 1 2 3
"""


def _write_meshes(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tetra.off").write_text(TETRA_OFF)
    (folder / "notes.txt").write_text("not a mesh")
    return folder


def test_mesh_sampling_is_on_the_surface_and_area_weighted():
    # two unit squares in z = 0 and z = 1, the second 3x as large
    v = np.array(
        [[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 1], [3, 0, 1], [3, 1, 1], [0, 1, 1]],
        dtype=float,
    )
    f = np.array([[0, 1, 2], [0, 2, 3], [4, 5, 6], [4, 6, 7]])
    pts = Mesh("two", v, f).sample(4000, np.random.default_rng(0))
    assert set(np.unique(pts[:, 2])) == {0.0, 1.0}
    assert abs((pts[:, 2] == 1).mean() - 0.75) < 0.03
    assert ((pts[:, 0] >= 0) & (pts[:, 0] <= 3) & (pts[:, 1] >= 0) & (pts[:, 1] <= 1)).all()


def test_mesh_validation():
    with pytest.raises(ValueError, match="vertices"):
        Mesh("bad", np.zeros((3, 2)), np.array([[0, 1, 2]]))
    with pytest.raises(ValueError, match="out of range"):
        Mesh("bad", np.zeros((3, 3)), np.array([[0, 1, 5]]))
    with pytest.raises(ValueError, match="faces"):
        Mesh("bad", np.zeros((3, 3)), np.zeros((0, 3)))


@pytest.mark.parametrize("kind", ["superquadric", "blob", "primitive", "union"])
def test_procedural_shapes_are_seeded_and_normalised(kind):
    if kind in ("primitive", "union"):
        pytest.importorskip("trimesh", reason="primitives and unions need the registration extra")
    a = make_procedural_shape(kind, np.random.default_rng(3))
    b = make_procedural_shape(kind, np.random.default_rng(3))
    c = make_procedural_shape(kind, np.random.default_rng(4))
    assert np.array_equal(a.vertices, b.vertices) and np.array_equal(a.faces, b.faces)
    assert a.vertices.shape != c.vertices.shape or not np.allclose(a.vertices, c.vertices)
    radius = np.linalg.norm(a.vertices[np.unique(a.faces)], axis=1)
    assert np.isclose(radius.max(), 1.0)
    centroid = (a.areas[:, None] * a.triangles.mean(1)).sum(0) / a.areas.sum()
    assert np.allclose(centroid, 0, atol=1e-9)


def test_procedural_shapes_mix_and_errors():
    shapes = procedural_shapes(6, seed=1, kinds=("blob", "superquadric"), weights=(1, 0))
    assert [s.name.split("-")[0] for s in shapes] == ["blob"] * 6
    with pytest.raises(ValueError, match="kinds"):
        procedural_shapes(2, kinds=("cube",))
    with pytest.raises(ValueError, match="n"):
        procedural_shapes(0)


def test_procedural_shapes_cache_reloads_the_same_shapes(tmp_path):
    first = procedural_shapes(3, seed=2, kinds=("blob",), cache=True, cache_dir=tmp_path)
    files = list((tmp_path / "procedural").glob("*.npz"))
    assert len(files) == 1
    again = procedural_shapes(3, seed=2, kinds=("blob",), cache=True, cache_dir=tmp_path)
    fresh = procedural_shapes(3, seed=2, kinds=("blob",))
    for a, b, c in zip(first, again, fresh):
        assert a.name == b.name == c.name
        assert np.array_equal(a.vertices, b.vertices) and np.array_equal(a.faces, b.faces)
        assert np.array_equal(a.vertices, c.vertices)
    other = procedural_shapes(3, seed=3, kinds=("blob",), cache=True, cache_dir=tmp_path)
    assert len(list((tmp_path / "procedural").glob("*.npz"))) == 2
    assert not np.array_equal(other[0].vertices, first[0].vertices)


def test_registration_pairs_are_independent_samples_with_controlled_angles():
    shapes = procedural_shapes(3, seed=0, kinds=("blob",))
    pairs = make_registration_pairs(
        shapes, 20, n_points=128, angle_range=(30, 60), noise=0.0, seed=5
    )
    again = make_registration_pairs(
        shapes, 20, n_points=128, angle_range=(30, 60), noise=0.0, seed=5
    )
    assert torch.equal(pairs.source, again.source) and torch.equal(pairs.target, again.target)
    assert pairs.source.shape == pairs.target.shape == (20, 128, 3)
    assert bool(((pairs.angle >= 30) & (pairs.angle <= 60)).all())
    eye = torch.eye(3).expand(20, 3, 3)
    assert torch.allclose(geodesic_error(pairs.rotation, eye, degrees=True), pairs.angle, atol=1e-3)
    # undo the rotation: same shape, but not the same points (no exact correspondences)
    back = pairs.target @ pairs.rotation
    d = torch.cdist(pairs.source, back).min(-1).values
    assert float(d.min()) > 1e-6  # no point is duplicated
    assert float(d.median()) < 0.2  # but both lie on the same surface
    assert torch.allclose(pairs.source.mean(1), torch.zeros(20, 3), atol=1e-5)
    noisy = make_registration_pairs(shapes, 4, n_points=128, noise=0.05, translation=0.5, seed=5)
    assert bool((noisy.translation.abs() <= 0.5).all()) and noisy.translation.abs().sum() > 0
    assert len(noisy.subset(slice(0, 2))) == 2


def test_registration_pairs_errors():
    shapes = procedural_shapes(1, seed=0, kinds=("blob",))
    with pytest.raises(TypeError, match="meshes"):
        make_registration_pairs([], 2)
    with pytest.raises(ValueError, match="angle_range"):
        make_registration_pairs(shapes, 2, angle_range=(60, 30))
    with pytest.raises(ValueError, match="noise"):
        make_registration_pairs(shapes, 2, noise=-1.0)
    with pytest.raises(ValueError, match="n_points"):
        make_registration_pairs(shapes, 2, n_points=0)


# ------------------------------------------------------------------------------- CGAL loader


def test_cgal_loader_reads_a_generated_folder_and_env_var(tmp_path, monkeypatch):
    pytest.importorskip("trimesh", reason="reading mesh files needs the registration extra")
    folder = _write_meshes(tmp_path / "data" / "meshes")
    cache = tmp_path / "cache"
    meshes = load_cgal_meshes("all", path=tmp_path, cache_dir=cache, min_faces=1)
    assert [m.name for m in meshes] == ["tetra"]
    assert np.isclose(np.linalg.norm(meshes[0].vertices, axis=1).max(), 1.0)
    # the second load comes from the normalised .npz copy in the cache
    assert list((cache / "mesh-npz").glob("tetra-*.npz"))
    again = load_cgal_meshes(["tetra"], path=folder, cache_dir=cache)
    assert np.allclose(again[0].vertices, meshes[0].vertices)
    monkeypatch.setenv("BEYONDGD_CGAL_DATA", str(folder))
    assert cgal_mesh_dir() == folder
    with pytest.raises(DataNotFoundError, match="bunny"):
        load_cgal_meshes(["bunny"], cache_dir=cache)
    # min_faces filters the tiny mesh out of the default selection
    with pytest.raises(DataNotFoundError, match="no usable meshes"):
        load_cgal_meshes("all", cache_dir=cache, min_faces=100)


def test_cgal_loader_extracts_a_generated_tarball_outside_the_repo(tmp_path):
    pytest.importorskip("trimesh", reason="reading mesh files needs the registration extra")
    tarball = tmp_path / "data.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:
        for name, text in [("data/meshes/tetra.off", TETRA_OFF), ("data/other/x.off", TETRA_OFF)]:
            blob = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    cache = tmp_path / "cache"
    folder = cgal_mesh_dir(tarball, cache_dir=cache)
    assert folder == cache / "cgal-meshes"
    assert sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) == ["tetra.off"]
    assert cgal_mesh_dir(tarball, cache_dir=cache) == folder  # extracted once, reused
    meshes = load_cgal_meshes(["tetra"], path=tarball, cache_dir=cache)
    assert len(meshes) == 1 and len(meshes[0].faces) == 4


def test_cgal_loader_missing_data_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("BEYONDGD_CGAL_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(DataNotFoundError, match="apt-get install libcgal-demo"):
        load_cgal_meshes()
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataNotFoundError, match="apt-get install libcgal-demo"):
        cgal_mesh_dir(empty)


@pytest.mark.skipif(
    not os.path.exists(CGAL_DEFAULT_PATH),
    reason="Debian package libcgal-demo is not installed (apt-get install libcgal-demo)",
)
def test_real_cgal_meshes_load(tmp_path):
    pytest.importorskip("trimesh", reason="reading mesh files needs the registration extra")
    meshes = load_cgal_meshes(["bunny00", "cow"])
    assert [m.name for m in meshes] == ["bunny00", "cow"]
    for m in meshes:
        assert len(m.faces) > 1000
        assert np.isclose(np.linalg.norm(m.vertices[np.unique(m.faces)], axis=1).max(), 1.0)
