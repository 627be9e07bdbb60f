"""The parts of benchmarks/gpu_check.py (the entry point), one module each."""
