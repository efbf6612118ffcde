"""Many runs: launching them, grids, sweeps, reports and their statistics."""
