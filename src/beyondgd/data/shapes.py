r"""3-D shapes for point-cloud registration: a procedural generator and the CGAL meshes.

- :func:`procedural_shapes`: seeded random shapes (the training set): trimesh primitives (box,
  capsule, cone, cylinder, torus) with random anisotropic scaling and tapering, unions of 2-4
  primitives at random offsets (overlapping bodies concatenated, not boolean-merged: only their
  surface samples matter), superquadrics :math:`|x/a|^{2/e_2} + \ldots` with random exponents and
  tapering, and star-shaped blobs :math:`r(u) = 1 + \sum_k a_k \sin(\langle f_k, u\rangle +
  \phi_k)` on the unit sphere (most of them without any symmetry, so a rotation is identifiable).
- :func:`load_cgal_meshes`: the meshes that ship with CGAL's examples (Debian package
  ``libcgal-demo``: ``/usr/share/doc/libcgal-dev/data.tar.gz``, folder ``data/meshes``): unseen
  real objects (armadillo, bunny, dragon, camel, cow, elephant, ...) for testing. The tarball is
  extracted once to a cache folder (``~/.cache/beyondgd/cgal-meshes``, or the temp folder if that
  is not writable), never into the working tree.
- :func:`make_registration_pairs`: pairs (source, target = R* source' + noise) whose two clouds
  are independent surface samples of the same mesh (no exact correspondences, so a model cannot
  learn the sampling pattern), with the rotation angle drawn from a controlled range.

Meshes are held as :class:`Mesh` (numpy vertices and faces), centred at the surface centroid and
scaled to unit maximum radius. trimesh (extra ``registration``) is needed for the primitives and
for reading mesh files; it is imported lazily.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import shutil
import tarfile
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from beyondgd.core import atomic_write_bytes, check_choice, check_int, check_number
from beyondgd.data.fashion_mnist import DataNotFoundError

__all__ = [
    "CGAL_DEFAULT_PATH",
    "CGAL_ENV_VAR",
    "CGAL_OBJECTS",
    "SHAPE_KINDS",
    "Mesh",
    "RegistrationPairs",
    "cgal_mesh_dir",
    "load_cgal_meshes",
    "load_mesh",
    "make_procedural_shape",
    "make_registration_pairs",
    "procedural_shapes",
]

CGAL_DEFAULT_PATH = "/usr/share/doc/libcgal-dev/data.tar.gz"
CGAL_ENV_VAR = "BEYONDGD_CGAL_DATA"
_CGAL_HINT = (
    "install it with `apt-get install libcgal-demo` (Debian/Ubuntu; it ships "
    f"{CGAL_DEFAULT_PATH}), or pass path= / set {CGAL_ENV_VAR} to that tarball or to a folder of "
    ".off/.ply/.stl meshes"
)
_MESH_SUFFIXES = (".off", ".ply", ".stl", ".obj")

#: Distinct objects among CGAL's example meshes without a rotational symmetry (the default test
#: set). Left out because another rotation fits them about as well as the true one (ICP from 300
#: random poses reaches an RMSE within 1.3x of the identity's): blade, dragknob, handle, knot1,
#: mushroom, pinion, rotor, spool, turbine.
CGAL_OBJECTS = (
    "anchor", "armadillo", "b9_mesh", "bear", "boeing", "bones", "bull", "cactus", "camel",
    "ChineseDragon-10kv", "couplingdown", "cow", "dino", "diplodocus", "elephant", "elk",
    "fandisk", "femur", "hand", "head", "helmet", "homer", "joint", "lion", "lion-head", "man",
    "mannequin-devil", "mech-holes-shark", "nefertiti", "part", "pig", "triceratops",
)  # fmt: skip

SHAPE_KINDS = ("primitive", "union", "superquadric", "blob")


def _trimesh():
    try:
        import trimesh
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "this needs trimesh: pip install 'beyondgd[registration]' (or pip install trimesh)"
        ) from err
    return trimesh


@dataclass
class Mesh:
    """A triangle mesh: ``vertices`` ``(V, 3)`` float64, ``faces`` ``(F, 3)`` int64.

    Examples
    --------
    >>> import numpy as np
    >>> tetra = Mesh("tetra", np.eye(4, 3), np.array([[0, 1, 2], [0, 1, 3], [0, 2, 3], [1, 2, 3]]))
    >>> tetra.sample(5, np.random.default_rng(0)).shape
    (5, 3)
    """

    name: str
    vertices: np.ndarray
    faces: np.ndarray
    _cdf: np.ndarray | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.vertices = np.asarray(self.vertices, dtype=np.float64)
        self.faces = np.asarray(self.faces, dtype=np.int64)
        if self.vertices.ndim != 2 or self.vertices.shape[1] != 3:
            raise ValueError(f"vertices must have shape (V, 3), got {self.vertices.shape}")
        if self.faces.ndim != 2 or self.faces.shape[1] != 3 or len(self.faces) == 0:
            raise ValueError(f"faces must have shape (F, 3) with F >= 1, got {self.faces.shape}")
        if not np.isfinite(self.vertices).all():
            raise ValueError(f"mesh {self.name!r} has non-finite vertices")
        if self.faces.min() < 0 or self.faces.max() >= len(self.vertices):
            raise ValueError(f"mesh {self.name!r} has face indices out of range")

    @property
    def triangles(self) -> np.ndarray:
        return self.vertices[self.faces]  # (F, 3, 3)

    @property
    def areas(self) -> np.ndarray:
        t = self.triangles
        return 0.5 * np.linalg.norm(np.cross(t[:, 1] - t[:, 0], t[:, 2] - t[:, 0]), axis=1)

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` points uniform on the surface (area-weighted face, uniform barycentric)."""
        if self._cdf is None:
            a = self.areas
            if not a.sum() > 0:
                raise ValueError(f"mesh {self.name!r} has zero surface area")
            self._cdf = np.cumsum(a) / a.sum()
        face = np.minimum(
            np.searchsorted(self._cdf, rng.random(n), side="right"), len(self._cdf) - 1
        )
        u, v = rng.random(n), rng.random(n)
        flip = u + v > 1
        u, v = np.where(flip, 1 - u, u), np.where(flip, 1 - v, v)
        t = self.triangles[face]
        return t[:, 0] + u[:, None] * (t[:, 1] - t[:, 0]) + v[:, None] * (t[:, 2] - t[:, 0])

    def normalized(self) -> Mesh:
        """Centred at the surface (area-weighted) centroid, scaled to maximum radius 1."""
        a = self.areas
        if not a.sum() > 0:
            raise ValueError(f"mesh {self.name!r} has zero surface area")
        centroid = (a[:, None] * self.triangles.mean(1)).sum(0) / a.sum()
        v = self.vertices - centroid
        used = v[np.unique(self.faces)]
        return Mesh(self.name, v / np.linalg.norm(used, axis=1).max(), self.faces)


# ----------------------------------------------------------------------------- procedural shapes


def _grid_sphere(n_u: int = 24, n_v: int = 48) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A closed UV-sphere grid: (eta, omega) per vertex and faces (poles as single vertices)."""
    eta = np.linspace(-np.pi / 2, np.pi / 2, n_u + 1)[1:-1]
    omega = np.linspace(-np.pi, np.pi, n_v, endpoint=False)
    ee, oo = np.meshgrid(eta, omega, indexing="ij")
    params = np.stack([ee.ravel(), oo.ravel()], 1)
    params = np.vstack([[-np.pi / 2, 0.0], params, [np.pi / 2, 0.0]])
    faces = []
    rows = n_u - 1

    def idx(i, j):
        return 1 + i * n_v + (j % n_v)

    for j in range(n_v):
        faces.append([0, idx(0, j + 1), idx(0, j)])
        faces.append([len(params) - 1, idx(rows - 1, j), idx(rows - 1, j + 1)])
    for i in range(rows - 1):
        for j in range(n_v):
            a, b, c, d = idx(i, j), idx(i, j + 1), idx(i + 1, j), idx(i + 1, j + 1)
            faces += [[a, b, d], [a, d, c]]
    return params[:, 0], params[:, 1], np.asarray(faces)


def _spow(x: np.ndarray, p: float) -> np.ndarray:
    return np.sign(x) * np.abs(x) ** p


def _taper_bend(v: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random linear taper along z and a bend in x: breaks the mirror symmetries."""
    kx, ky = rng.uniform(-0.5, 0.5, 2)
    z = v[:, 2] / max(np.abs(v[:, 2]).max(), 1e-9)
    v = v.copy()
    v[:, 0] *= 1 + kx * z
    v[:, 1] *= 1 + ky * z
    v[:, 0] += rng.uniform(-0.3, 0.3) * z**2
    return v


def _superquadric(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    eta, omega, faces = _grid_sphere()
    e1, e2 = rng.uniform(0.3, 1.8, 2)
    a = rng.uniform(0.4, 1.0, 3)
    ce, se = np.cos(eta), np.sin(eta)
    v = np.stack(
        [
            a[0] * _spow(ce, e1) * _spow(np.cos(omega), e2),
            a[1] * _spow(ce, e1) * _spow(np.sin(omega), e2),
            a[2] * _spow(se, e1),
        ],
        1,
    )
    return _taper_bend(v, rng), faces


def _blob(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    eta, omega, faces = _grid_sphere()
    u = np.stack([np.cos(eta) * np.cos(omega), np.cos(eta) * np.sin(omega), np.sin(eta)], 1)
    k = int(rng.integers(3, 7))
    freqs = rng.normal(size=(k, 3)) * rng.uniform(1.0, 3.0, (k, 1))
    amps = rng.uniform(0.05, 0.3, k)
    phases = rng.uniform(0, 2 * np.pi, k)
    r = 1 + (amps * np.sin(u @ freqs.T + phases)).sum(1)
    return u * np.maximum(r, 0.2)[:, None] * rng.uniform(0.6, 1.0, 3), faces


def _primitive(rng: np.random.Generator, tm) -> tuple[np.ndarray, np.ndarray]:
    kind = rng.choice(["box", "capsule", "cone", "cylinder", "torus"])
    if kind == "box":
        m = tm.creation.box(extents=rng.uniform(0.4, 1.6, 3))
    elif kind == "capsule":
        m = tm.creation.capsule(height=rng.uniform(0.5, 1.5), radius=rng.uniform(0.2, 0.5))
    elif kind == "cone":
        m = tm.creation.cone(radius=rng.uniform(0.3, 0.8), height=rng.uniform(0.5, 1.5))
    elif kind == "cylinder":
        m = tm.creation.cylinder(radius=rng.uniform(0.2, 0.7), height=rng.uniform(0.4, 1.6))
    else:
        m = tm.creation.torus(
            major_radius=rng.uniform(0.5, 0.8), minor_radius=rng.uniform(0.1, 0.3)
        )
    v = np.asarray(m.vertices, dtype=np.float64) * rng.uniform(0.6, 1.4, 3)
    return _taper_bend(v, rng), np.asarray(m.faces)


def _random_rotation_np(rng: np.random.Generator) -> np.ndarray:
    q = rng.normal(size=4)
    w, x, y, z = q / np.linalg.norm(q)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def _union(rng: np.random.Generator, tm) -> tuple[np.ndarray, np.ndarray]:
    parts_v, parts_f, offset = [], [], 0
    for _ in range(int(rng.integers(2, 5))):
        maker = rng.choice(["primitive", "superquadric", "blob"])
        if maker == "primitive":
            v, f = _primitive(rng, tm)
        elif maker == "superquadric":
            v, f = _superquadric(rng)
        else:
            v, f = _blob(rng)
        v = v * rng.uniform(0.3, 0.7) @ _random_rotation_np(rng).T + rng.uniform(-0.6, 0.6, 3)
        parts_v.append(v)
        parts_f.append(f + offset)
        offset += len(v)
    return np.vstack(parts_v), np.vstack(parts_f)


def make_procedural_shape(kind: str, rng: np.random.Generator, name: str | None = None) -> Mesh:
    """One random shape of ``kind`` (see :data:`SHAPE_KINDS`), normalised.

    ``"superquadric"`` and ``"blob"`` are pure numpy; ``"primitive"`` and ``"union"`` need
    trimesh (extra ``registration``).
    """
    kind = check_choice("kind", kind, SHAPE_KINDS)
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    if kind == "superquadric":
        v, f = _superquadric(rng)
    elif kind == "blob":
        v, f = _blob(rng)
    elif kind == "primitive":
        v, f = _primitive(rng, _trimesh())
    else:
        v, f = _union(rng, _trimesh())
    return Mesh(name or kind, v, f).normalized()


def procedural_shapes(
    n: int,
    *,
    seed: int = 0,
    kinds: Sequence[str] = SHAPE_KINDS,
    weights: Sequence[float] | None = None,
    cache: bool = False,
    cache_dir: str | os.PathLike | None = None,
) -> list[Mesh]:
    """``n`` random shapes, kinds drawn with ``weights`` (default: uniform), reproducible from
    ``seed``.

    With ``cache=True`` the shapes are kept as one ``.npz`` in the cache folder (``cache_dir``,
    default ``~/.cache/beyondgd``) and reloaded by later calls (generating 128 shapes takes
    seconds). The key covers the arguments and the source of this module, so a changed generator
    never serves stale shapes.

    Examples
    --------
    >>> shapes = procedural_shapes(3, seed=1, kinds=("blob", "superquadric"))
    >>> [round(float(abs(s.vertices).max()), 3) <= 1.0 for s in shapes]
    [True, True, True]
    """
    n = check_int("n", n, low=1)
    seed = check_int("seed", seed, low=0)
    kinds = tuple(kinds)
    if not kinds:
        raise ValueError("kinds must not be empty")
    for k in kinds:
        check_choice("kinds", k, SHAPE_KINDS)
    if weights is None:
        p = np.full(len(kinds), 1 / len(kinds))
    else:
        p = np.asarray(weights, dtype=float)
        if p.shape != (len(kinds),) or (p < 0).any() or not p.sum() > 0:
            raise ValueError(f"weights must be {len(kinds)} non-negative numbers, got {weights}")
        p = p / p.sum()
    cached = None
    if cache:
        source = Path(__file__).read_bytes()
        key = hashlib.sha1(repr((n, seed, kinds, p.tolist())).encode() + source).hexdigest()
        cached = _cache_root(cache_dir) / "procedural" / f"shapes-{n}-{seed}-{key[:16]}.npz"
        if cached.exists():
            try:
                with np.load(cached) as data:
                    names = [str(x) for x in data["names"]]
                    return [Mesh(m, data[f"v{i}"], data[f"f{i}"]) for i, m in enumerate(names)]
            except (OSError, ValueError, KeyError):
                pass
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        kind = kinds[int(rng.choice(len(kinds), p=p))]
        out.append(make_procedural_shape(kind, rng, name=f"{kind}-{i}"))
    if cached is not None:
        arrays = {f"v{i}": m.vertices for i, m in enumerate(out)}
        arrays.update({f"f{i}": m.faces for i, m in enumerate(out)})
        try:
            buf = io.BytesIO()
            np.savez(buf, names=np.array([m.name for m in out]), **arrays)
            atomic_write_bytes(cached, buf.getvalue())
        except OSError:
            pass  # a read-only cache only costs time
    return out


# ---------------------------------------------------------------------------------- CGAL meshes


def load_mesh(path: str | os.PathLike, *, normalize: bool = True) -> Mesh:
    """Read one mesh file (.off, .ply, .stl, .obj) with trimesh."""
    tm = _trimesh()
    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(f"mesh file {path} does not exist")
    loaded = tm.load(str(path), force="mesh", process=False)
    mesh = Mesh(path.stem, np.asarray(loaded.vertices), np.asarray(loaded.faces).reshape(-1, 3))
    return mesh.normalized() if normalize else mesh


def _load_cached(path: Path, cache_dir: str | os.PathLike | None) -> Mesh:
    """:func:`load_mesh` with a normalised copy kept as ``.npz`` in the cache (parsing the large
    OFF files takes seconds; the copy is keyed by the file's path, size and mtime)."""
    stat = path.stat()
    key = hashlib.sha1(f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()
    cached = _cache_root(cache_dir) / "mesh-npz" / f"{path.stem}-{key[:16]}.npz"
    if cached.exists():
        try:
            with np.load(cached) as data:
                return Mesh(path.stem, data["vertices"], data["faces"])
        except (OSError, ValueError, KeyError):
            pass
    mesh = load_mesh(path)
    try:
        buf = io.BytesIO()
        np.savez(buf, vertices=mesh.vertices, faces=mesh.faces)
        atomic_write_bytes(cached, buf.getvalue())
    except OSError:
        pass  # a read-only cache only costs time
    return mesh


def _cache_root(cache_dir: str | os.PathLike | None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir)
    home = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "beyondgd"
    try:
        home.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=home, delete=True)
        probe.close()
        return home
    except OSError:
        return Path(tempfile.gettempdir()) / f"beyondgd-cache-{os.getuid()}"


def _extract_meshes(tarball: Path, cache_dir: str | os.PathLike | None) -> Path:
    """Extract the ``meshes`` folder of CGAL's data tarball once; returns the folder."""
    stat = tarball.stat()
    stamp = f"{tarball.resolve()}:{stat.st_size}:{int(stat.st_mtime)}"
    target = _cache_root(cache_dir) / "cgal-meshes"
    marker = target / ".source"
    if marker.exists() and marker.read_text() == stamp:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".cgal-meshes-", dir=target.parent))
    try:
        with tarfile.open(tarball, "r:*") as tar:
            for member in tar:
                parts = Path(member.name).parts
                if (
                    not member.isfile()
                    or "meshes" not in parts[:-1]
                    or Path(member.name).suffix.lower() not in _MESH_SUFFIXES
                ):
                    continue
                src = tar.extractfile(member)
                if src is None:
                    continue
                with src, open(tmp / Path(member.name).name, "wb") as dst:
                    shutil.copyfileobj(src, dst)
        if not any(tmp.iterdir()):
            raise DataNotFoundError(f"{tarball} holds no meshes/*.off|.ply|.stl; {_CGAL_HINT}")
        (tmp / ".source").write_text(stamp)
        if target.exists():
            shutil.rmtree(target, ignore_errors=True)
        try:
            os.replace(tmp, target)
        except OSError:
            # another process extracted the same tarball at the same time: use its copy
            if not (marker.exists() and marker.read_text() == stamp):
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def cgal_mesh_dir(
    path: str | os.PathLike | None = None, *, cache_dir: str | os.PathLike | None = None
) -> Path:
    """The folder holding CGAL's meshes.

    ``path`` (else ``$BEYONDGD_CGAL_DATA``, else :data:`CGAL_DEFAULT_PATH`) is either a tarball
    (extracted once under ``cache_dir``, default ``~/.cache/beyondgd``) or a folder of meshes (or
    one with a ``meshes`` or ``data/meshes`` subfolder). Raises
    :class:`~beyondgd.data.DataNotFoundError` with install instructions when nothing is there.
    """
    if path is None:
        path = os.environ.get(CGAL_ENV_VAR) or CGAL_DEFAULT_PATH
    path = Path(path)
    if path.is_file():
        return _extract_meshes(path, cache_dir)
    if path.is_dir():
        for folder in (path / "data" / "meshes", path / "meshes", path):
            if folder.is_dir() and any(
                p.suffix.lower() in _MESH_SUFFIXES for p in folder.iterdir()
            ):
                return folder
        raise DataNotFoundError(f"no .off/.ply/.stl meshes in {path}; {_CGAL_HINT}")
    raise DataNotFoundError(f"CGAL meshes not found at {path}; {_CGAL_HINT}")


def load_cgal_meshes(
    names: Sequence[str] | str | None = None,
    *,
    path: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    min_faces: int = 100,
) -> list[Mesh]:
    """Load CGAL's example meshes, normalised (centred, unit maximum radius).

    Parameters
    ----------
    names
        Mesh file stems to load; ``None`` loads :data:`CGAL_OBJECTS` (those present), ``"all"``
        every mesh in the folder. Names that are missing are an error only when given explicitly.
    path, cache_dir
        See :func:`cgal_mesh_dir`.
    min_faces
        Skip meshes with fewer faces (test primitives such as the tetrahedron).

    Examples
    --------
    >>> meshes = load_cgal_meshes(["bunny00"])  # doctest: +SKIP
    """
    folder = cgal_mesh_dir(path, cache_dir=cache_dir)
    min_faces = check_int("min_faces", min_faces, low=1)
    files: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.suffix.lower() in _MESH_SUFFIXES and p.stem not in files:
            files[p.stem] = p
    explicit = names is not None and names != "all"
    if names is None:
        wanted = [n for n in CGAL_OBJECTS if n in files]
    elif names == "all":
        wanted = list(files)
    else:
        wanted = [names] if isinstance(names, str) else list(names)
        missing = [n for n in wanted if n not in files]
        if missing:
            raise DataNotFoundError(f"meshes {missing} not found in {folder}; {_CGAL_HINT}")
    meshes = []
    for n in wanted:
        try:
            mesh = _load_cached(files[n], cache_dir)
        except ImportError:
            raise
        except Exception as err:  # a malformed file: skip it unless asked for by name
            if explicit:
                raise ValueError(f"could not read mesh {files[n]}: {err}") from err
            continue
        if len(mesh.faces) >= min_faces or explicit:
            meshes.append(mesh)
    if not meshes:
        raise DataNotFoundError(f"no usable meshes in {folder}; {_CGAL_HINT}")
    return meshes


# ---------------------------------------------------------------------------- registration pairs


@dataclass
class RegistrationPairs:
    """Pairs ``target ~ source @ rotation.T + translation`` (+ noise).

    ``source``, ``target`` ``(P, N, 3)``; ``rotation`` ``(P, 3, 3)``; ``translation`` ``(P, 3)``;
    ``angle`` (degrees) ``(P,)``; ``mesh_index`` ``(P,)`` into the mesh list used.

    Examples
    --------
    >>> pairs = make_registration_pairs(procedural_shapes(1, kinds=("blob",)), 3, n_points=16)
    >>> len(pairs), pairs.subset(slice(0, 2)).rotation.shape
    (3, torch.Size([2, 3, 3]))
    """

    source: torch.Tensor
    target: torch.Tensor
    rotation: torch.Tensor
    translation: torch.Tensor
    angle: torch.Tensor
    mesh_index: torch.Tensor

    def __len__(self) -> int:
        return len(self.source)

    def subset(self, index) -> RegistrationPairs:
        return RegistrationPairs(
            *(x[index] for x in (self.source, self.target, self.rotation, self.translation,
                                 self.angle, self.mesh_index))
        )  # fmt: skip


def make_registration_pairs(
    meshes: Sequence[Mesh],
    n_pairs: int,
    *,
    n_points: int = 256,
    angle_range: tuple[float, float] = (0.0, 90.0),
    noise: float = 0.01,
    translation: float = 0.0,
    random_orientation: bool = True,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> RegistrationPairs:
    r"""Registration pairs from ``meshes`` with controlled initial angles.

    For each pair: a mesh is drawn; two independent sets of ``n_points`` surface samples
    :math:`S_1, S_2` (with ``random_orientation`` both in one random pose, so no canonical
    orientation can be learnt); the rotation :math:`R^*` has a uniform axis and an angle uniform
    in ``angle_range`` (degrees); ``source = S_1 - mean(S_1)``,
    ``target = (S_2 - mean(S_2)) R^{*T} + t + noise``, with ``t`` uniform in
    ``[-translation, translation]^3`` and Gaussian noise of standard deviation ``noise`` (shapes
    have unit radius). Reproducible from ``seed``.

    Examples
    --------
    >>> shapes = procedural_shapes(2, seed=0, kinds=("blob",))
    >>> pairs = make_registration_pairs(shapes, 4, n_points=64, angle_range=(30, 60), seed=1)
    >>> pairs.source.shape, bool(((pairs.angle >= 30) & (pairs.angle <= 60)).all())
    (torch.Size([4, 64, 3]), True)
    """
    meshes = list(meshes)
    if not meshes or not all(isinstance(m, Mesh) for m in meshes):
        raise TypeError("meshes must be a non-empty sequence of beyondgd.data.Mesh")
    n_pairs = check_int("n_pairs", n_pairs, low=1)
    n_points = check_int("n_points", n_points, low=3)
    if len(angle_range) != 2:
        raise ValueError(f"angle_range must be (low, high) in degrees, got {angle_range}")
    lo = check_number("angle_range[0]", angle_range[0], low=0, high=180)
    hi = check_number("angle_range[1]", angle_range[1], low=lo, high=180)
    noise = check_number("noise", noise, low=0)
    translation = check_number("translation", translation, low=0)
    seed = check_int("seed", seed, low=0)
    rng = np.random.default_rng(seed)
    src, tgt, rots, trans, angles, index = [], [], [], [], [], []
    for _ in range(n_pairs):
        i = int(rng.integers(len(meshes)))
        s1, s2 = meshes[i].sample(n_points, rng), meshes[i].sample(n_points, rng)
        if random_orientation:
            pose = _random_rotation_np(rng)
            s1, s2 = s1 @ pose.T, s2 @ pose.T
        axis = rng.normal(size=3)
        axis /= np.linalg.norm(axis)
        angle = rng.uniform(lo, hi)
        k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
        th = math.radians(angle)
        rot = np.eye(3) + math.sin(th) * k + (1 - math.cos(th)) * (k @ k)
        t = rng.uniform(-translation, translation, 3) if translation > 0 else np.zeros(3)
        s1 = s1 - s1.mean(0)
        s2 = (s2 - s2.mean(0)) @ rot.T + t + noise * rng.normal(size=s2.shape)
        src.append(s1)
        tgt.append(s2)
        rots.append(rot)
        trans.append(t)
        angles.append(angle)
        index.append(i)

    def as_t(x, dt=dtype):
        return torch.as_tensor(np.asarray(x), dtype=dt)

    return RegistrationPairs(
        as_t(src), as_t(tgt), as_t(rots), as_t(trans), as_t(angles), as_t(index, torch.long)
    )
