# The performance lab: every benchmark, one table, bench-results.json.
# Needs root (BPF programs) and about 25 minutes (two guest kernels under TCG).
.PHONY: bench
bench:
	scripts/setup.sh bench
	.venv/bin/python -m benchmarks
