"""Side-by-side benchmarks of the training loop (see benchmarks/throughput.py and BENCHMARKS.md)."""
