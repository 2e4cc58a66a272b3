"""Benchmarks: sparse against dense, on this machine, with the dense baseline in the same process."""
