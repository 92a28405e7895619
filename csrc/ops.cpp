// Every operator schema of the torch_bp library, declared once. Kernels live in csrc/<device>/
// beside their family (csrc/cpu/normalization.cpp mirrors torch_bp/ops/normalization.py);
// fake (meta) implementations for torch.compile live in torch_bp/backend.py.
//
// Naming: <op>_fwd computes a Function's forward outputs (and residuals), <op>_bwd its backward
// rule; the math is stated once, in the docstring of the Function in torch_bp/ops/.
#include <torch/library.h>

TORCH_LIBRARY(torch_bp, m) {
  // normalization: LayerNormFunction, RMSNormFunction (mean/rstd: (N, 1) in the accumulation dtype)
  m.def("layer_norm_fwd(Tensor x, Tensor? weight, Tensor? bias, int d, float eps) -> (Tensor, Tensor, Tensor)");
  m.def("layer_norm_bwd(Tensor grad_y, Tensor x, Tensor? weight, Tensor mean, Tensor rstd, int d, bool[3] output_mask)"
        " -> (Tensor, Tensor, Tensor)");
  m.def("rms_norm_fwd(Tensor x, Tensor? weight, int d, float eps) -> (Tensor, Tensor)");
  m.def("rms_norm_bwd(Tensor grad_y, Tensor x, Tensor? weight, Tensor rstd, int d, bool[2] output_mask)"
        " -> (Tensor, Tensor)");
  // activation: GELUFunction, SiLUFunction, ReLUFunction (mask: uint8, 1 bit per element)
  m.def("gelu_fwd(Tensor x, str approximate) -> Tensor");
  m.def("gelu_bwd(Tensor grad_y, Tensor x, str approximate) -> Tensor");
  m.def("silu_fwd(Tensor x) -> Tensor");
  m.def("silu_bwd(Tensor grad_y, Tensor x) -> Tensor");
  m.def("relu_mask(Tensor y) -> Tensor");
  m.def("mask_bwd(Tensor grad_y, Tensor mask, float scale) -> Tensor");
}
