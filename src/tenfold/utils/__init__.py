"""Shared utilities: seeding, threads, timing, FLOP and memory accounting, checkpoints."""

from tenfold.utils.bench import BenchRow, compare, time_fn
from tenfold.utils.checkpoint import atomic_write_json, atomic_write_text, load_checkpoint, save_checkpoint
from tenfold.utils.flops import count_flops
from tenfold.utils.memory import activation_bytes
from tenfold.utils.params import count_parameters
from tenfold.utils.seeding import seed_everything
from tenfold.utils.threads import single_thread

__all__ = [
    "BenchRow", "compare", "time_fn", "atomic_write_json", "atomic_write_text", "load_checkpoint",
    "save_checkpoint", "count_flops", "activation_bytes", "count_parameters", "seed_everything",
    "single_thread",
]
