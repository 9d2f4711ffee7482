"""Stage 1: automatic differentiation, on scalars (``value``) and on NumPy arrays (``tensor``).

Import from the modules themselves (``from stage1_autograd.tensor import Tensor``): this file imports
nothing, so a mistake in one module does not stop the exercises of the others from being graded.
"""
