"""Entropy coding: integer CDF tables, the rANS stack coder, and bits-back schedules over the model.

tables.py    shift-invariant discretized-logistic CDF tables (the only place probabilities are made)
rans.py      a stack (LIFO) rANS coder compiled with numba: push/pop vectors of symbols
bitsback.py  Bit-Swap and BB-ANS schedules: push/pop of whole images' block sequences
importance.py  K posterior samples per block (BB-IS): coded at the importance-weighted bound, the slow mode
"""
