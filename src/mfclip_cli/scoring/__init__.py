"""The numerics the jobs share over what a pass over the data has given (the passes themselves
are ``engines/inference.py``): metrics, calibration, the inconclusive band, out-of-distribution
statistics, attribution, significance tests and plots on arrays; and, over a model, the
generator fingerprints of face tensors and the precision choice (int8 quantization and its
parity check run the detector). It sits below the engines and above the model."""
