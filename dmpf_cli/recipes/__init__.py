"""What one run does, from the checks before it to its results: training, evaluation, pretraining, benchmarks."""
