"""Small shared helpers: input validation, cost accounting, atomic files, seeding."""

from beyondgd.core.checkpoint import (
    atomic_torch_save,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
)
from beyondgd.core.cost import CostMeter
from beyondgd.core.numbers import finite_or_none
from beyondgd.core.seeding import derive_seed, make_generator
from beyondgd.core.validation import (
    check_choice,
    check_finite_tensor,
    check_int,
    check_number,
)

__all__ = [
    "CostMeter",
    "atomic_torch_save",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "check_choice",
    "check_finite_tensor",
    "check_int",
    "check_number",
    "derive_seed",
    "finite_or_none",
    "make_generator",
]
