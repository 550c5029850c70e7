"""Echo server: returns its input bytes unchanged. For tests, benchmarks and wiring checks."""
