"""Stage 2: a multilayer perceptron on top of the stage 1 autograd engine.

The modules, one concept each:
  * ``nn``          ``Parameter``, ``Module`` and the layers: ``Linear``, ``Sequential``, ``Dropout``, activations;
  * ``functional``  the same computations as plain functions: activations, dropout and the losses;
  * ``optim``       optimizers that update parameters from their gradients: ``SGD``, ``Adam``, ``AdamW``;
  * ``data``        batches, splits, standardisation and the spirals and digits data sets;
  * ``manual``      an MLP with its backward pass written by hand, without autograd;
  * ``train_mlp``   the training loop that puts them together.

Import from the modules themselves (``from stage2_mlp.nn import Linear``): this file imports nothing,
so a mistake in one module does not stop the exercises of the others from being graded.
"""
