"""juicer's tests; :mod:`tests.support` holds what several suites, the benchmarks and scripts share."""
