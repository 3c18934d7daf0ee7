"""Per-scan operations: ndarray in, ndarray out, validated."""
