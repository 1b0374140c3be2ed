"""Load tests: locust against a running Shoal (`make load`); see loadtests/run.py."""
