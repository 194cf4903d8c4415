"""Lowering (graph -> kernel list) and the emitters that print kernels as source files."""
