"""Benchmarks behind ``qcf-studio bench``: they print numbers; no test asserts a speed."""
