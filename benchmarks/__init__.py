"""lorapod's benchmarks: each prints figures with their conditions; none asserts a time."""
