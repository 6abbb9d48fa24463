"""fp32 CPU kernels: Numba loops (im2col, pooling, epilogues, row-wise norms) around numpy/OpenBLAS GEMM.

Every kernel writes into output buffers it is given (the execution plan owns the memory) and compiles once per
argument-type family (dtype, rank, contiguity), never per shape. ``compiler/lower.py`` picks them per node.
"""
