"""torch_bp: backpropagation made explicit.

Every layer is a ``torch.autograd.Function`` with a hand-written backward rule
(``torch_bp.ops``), packaged as drop-in twins of ``torch.nn.functional``
(``torch_bp.functional``) and ``torch.nn`` (``torch_bp.nn``), listed once in
``torch_bp.registry``, and swappable into existing models with :func:`convert`.
"""
from . import functional, nn, ops, registry
from .backend import backend_info, set_backend
from .convert import ConversionReport, conversion_report, convert, register_converter, revert
from .per_sample import DPOptimizer, per_sample_grads

__version__ = "0.1.0"

__all__ = ["functional", "nn", "ops", "registry", "convert", "revert", "conversion_report",
           "ConversionReport", "register_converter", "backend_info", "set_backend", "__version__"]
__all__ += ["per_sample_grads", "DPOptimizer"]
