"""numba nogil kernels: loops only, no validation."""
