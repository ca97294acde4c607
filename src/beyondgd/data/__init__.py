"""Offline data sets: nothing here downloads. Each loader takes an explicit path (and an
environment variable) so users can point it at their own copy."""

from beyondgd.data.fashion_mnist import (
    DataNotFoundError,
    load_fashion_mnist,
    read_idx,
)
from beyondgd.data.patches import (
    SKIMAGE_IMAGES,
    bundled_grey_images,
    load_image_patches,
    pool2x2,
)
from beyondgd.data.scenes import (
    FASHION_MNIST_CLASSES,
    TEXTURE_CLASSES,
    SegmentationData,
    colorize,
    load_scribble_folder,
    make_fashion_scenes,
    make_scribbles,
    make_texture_scenes,
    save_label_png,
)
from beyondgd.data.shapes import (
    CGAL_DEFAULT_PATH,
    CGAL_ENV_VAR,
    CGAL_OBJECTS,
    SHAPE_KINDS,
    Mesh,
    RegistrationPairs,
    cgal_mesh_dir,
    load_cgal_meshes,
    load_mesh,
    make_procedural_shape,
    make_registration_pairs,
    procedural_shapes,
)
from beyondgd.data.tabular import (
    load_digits_split,
    standardize,
)
from beyondgd.data.testfns import (
    TestFunction,
    test_functions,
)

__all__ = [
    "colorize",
    "FASHION_MNIST_CLASSES",
    "load_scribble_folder",
    "make_fashion_scenes",
    "make_scribbles",
    "make_texture_scenes",
    "save_label_png",
    "SegmentationData",
    "TEXTURE_CLASSES",
    "bundled_grey_images",
    "CGAL_DEFAULT_PATH",
    "CGAL_ENV_VAR",
    "cgal_mesh_dir",
    "CGAL_OBJECTS",
    "DataNotFoundError",
    "load_cgal_meshes",
    "load_digits_split",
    "load_fashion_mnist",
    "load_image_patches",
    "load_mesh",
    "make_procedural_shape",
    "make_registration_pairs",
    "Mesh",
    "pool2x2",
    "procedural_shapes",
    "read_idx",
    "RegistrationPairs",
    "SHAPE_KINDS",
    "SKIMAGE_IMAGES",
    "standardize",
    "test_functions",
    "TestFunction",
]
