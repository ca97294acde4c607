"""Small shared helpers: input validation, cost accounting, atomic files, seeding, and
rank-consistency helpers for torch.distributed."""

from beyondgd.core.checkpoint import (
    atomic_torch_save,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
)
from beyondgd.core.cost import CostMeter
from beyondgd.core.distributed import (
    all_ranks_agree,
    all_reduce_sum,
    any_rank,
    is_distributed,
    rank,
    world_size,
)
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
    "all_ranks_agree",
    "all_reduce_sum",
    "any_rank",
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
    "is_distributed",
    "make_generator",
    "rank",
    "world_size",
]
