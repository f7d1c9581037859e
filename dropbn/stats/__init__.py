"""Pure statistics (numpy/scipy, no dropbn import): intervals, tests, exact tests, power."""
