"""`mfclip train` and `mfclip ablate`: training runs and the ablation over them."""
