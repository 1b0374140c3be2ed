"""What the tests, the benchmarks and the load tests share to run Shoal as users run it."""
