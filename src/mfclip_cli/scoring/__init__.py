"""The numerics the jobs share, on arrays a pass over the data has given (the passes themselves
are ``engines/inference.py``): metrics, calibration, the inconclusive band, out-of-distribution
statistics, attribution, the precision choice, significance tests, and plots."""
