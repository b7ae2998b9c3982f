"""Process-wide allocator settings of the service: how many glibc malloc arenas it may use, and
handing freed heap memory back to the system.

glibc gives threads their own arenas (up to 8 per core); a long-running server whose compute threads
allocate tensors of ever-changing shapes keeps freed memory scattered over them, and its resident
memory creeps up. ``mallopt(M_ARENA_MAX, n)`` caps them; it acts on allocations made after the call,
so the service calls it before it loads the model. Freed chunks inside the heaps still count as
resident until ``malloc_trim(0)`` returns their pages; the service's batcher calls it between
batches, at most once per ``--malloc-trim-s`` seconds."""

import ctypes
import ctypes.util
import logging
from typing import Callable, Optional

logger = logging.getLogger(__name__)
M_ARENA_MAX = -8  # glibc's malloc.h


def limit_malloc_arenas(n: int) -> bool:
    """Caps glibc's malloc arenas at n (n <= 0: glibc's default). Returns whether the cap is set; where
    the C library has no mallopt (not glibc) it logs that and returns False."""
    if n <= 0:
        return False
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c")).mallopt
    except (OSError, AttributeError, TypeError):
        logger.warning("this C library has no mallopt: --malloc-arenas %d is not applied", n)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_ARENA_MAX, n))


def malloc_trim_function() -> Optional[Callable[[], int]]:
    """glibc's ``malloc_trim(0)`` as a callable (returns 1 when memory was released), or None where the
    C library has none (it then logs that once)."""
    try:
        trim = ctypes.CDLL(ctypes.util.find_library("c")).malloc_trim
    except (OSError, AttributeError, TypeError):
        logger.warning("this C library has no malloc_trim: --malloc-trim-s is not applied")
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return lambda: trim(0)
