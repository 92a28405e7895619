"""The backward rules of torch_bp: one module per family of layers.

Each module holds ``torch.autograd.Function`` subclasses written in the ``forward`` +
``setup_context`` style, with the forward and the backward rule side by side and the math
in the docstring. Nothing else in the package states a gradient.
"""
