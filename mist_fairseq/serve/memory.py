"""Process-wide allocator setting of the service: how many glibc malloc arenas it may use.

glibc gives threads their own arenas (up to 8 per core); a long-running server whose compute threads
allocate tensors of ever-changing shapes keeps freed memory scattered over them, and its resident
memory creeps up. ``mallopt(M_ARENA_MAX, n)`` caps them; it acts on allocations made after the call,
so the service calls it before it loads the model."""

import ctypes
import ctypes.util
import logging

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
