"""The Bit-Swap model: a float, quantization-aware training model and the exact integer model that codes.

config.py   hyper-parameters, latent/pixel grids
quant.py    the integer arithmetic both models share (requantization, activation LUT, monotone heads)
float_model.py   torch training model (straight-through rounding everywhere the exact model rounds)
export.py   float model -> integer tensors (weights, multipliers, thresholds, LUT, CDF tables)
exact.py    integer inference: the same numbers on every machine, batch size and thread count
"""
