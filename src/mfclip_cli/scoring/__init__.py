"""The numerics the jobs share: inference over a dataset, metrics, calibration,
out-of-distribution statistics, significance tests, and plots (apart from the numbers)."""
