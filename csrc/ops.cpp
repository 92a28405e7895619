// Every operator schema of the torch_bp library, declared once. Kernels live in csrc/<device>/
// beside their family (csrc/cpu/normalization.cpp mirrors torch_bp/ops/normalization.py);
// fake (meta) implementations for torch.compile live in torch_bp/backend.py.
//
// Naming: <op>_fwd computes a Function's forward outputs (and residuals), <op>_bwd its backward
// rule; the math is stated once, in the docstring of the Function in torch_bp/ops/.
#include <torch/library.h>

TORCH_LIBRARY(torch_bp, m) {
  // linear: BiasActivationFunction, y = act(h + b) (act: relu, gelu, silu; approximate: gelu's
  // none | tanh). fwd returns (y, mask): the 1-bit mask [y > 0] for relu, empty otherwise; bwd
  // takes that mask for relu, h otherwise, and returns (grad_h, grad_b or undefined).
  m.def("bias_act_fwd(Tensor h, Tensor? bias, str activation, str approximate) -> (Tensor, Tensor)");
  m.def("bias_act_bwd(Tensor grad_y, Tensor saved, Tensor? bias, str activation, str approximate, bool bias_grad)"
        " -> (Tensor, Tensor)");
  // normalization: LayerNormFunction, RMSNormFunction (mean/rstd: (N, 1) in the accumulation dtype)
  m.def("layer_norm_fwd(Tensor x, Tensor? weight, Tensor? bias, int d, float eps) -> (Tensor, Tensor, Tensor)");
  m.def("layer_norm_bwd(Tensor grad_y, Tensor x, Tensor? weight, Tensor mean, Tensor rstd, int d, bool[3] output_mask)"
        " -> (Tensor, Tensor, Tensor)");
  m.def("rms_norm_fwd(Tensor x, Tensor? weight, int d, float eps) -> (Tensor, Tensor)");
  m.def("rms_norm_bwd(Tensor grad_y, Tensor x, Tensor? weight, Tensor rstd, int d, bool[2] output_mask)"
        " -> (Tensor, Tensor)");
  // normalization: BatchNormFunction, x (N, C, ...); mean/var: (C,) in the accumulation dtype, the batch
  // statistics (computed when not given) or the given ones (eval, or the lean recompute)
  m.def("batch_norm_fwd(Tensor x, Tensor? weight, Tensor? bias, Tensor? mean, Tensor? var, float eps)"
        " -> (Tensor, Tensor, Tensor)");
  m.def("batch_norm_bwd(Tensor grad_y, Tensor x, Tensor? weight, Tensor mean, Tensor var, bool training, float eps, "
        "bool[3] output_mask) -> (Tensor, Tensor, Tensor)");
  // fused: BatchNormReLUFunction (ops/fused.py), relu(batch_norm(x)): the forward as batch_norm_fwd with the relu
  // in its normalisation pass; the backward takes the bias too, to recompute the relu's mask from x
  m.def("batch_norm_relu_fwd(Tensor x, Tensor? weight, Tensor? bias, Tensor? mean, Tensor? var, float eps)"
        " -> (Tensor, Tensor, Tensor)");
  m.def("batch_norm_relu_bwd(Tensor grad_y, Tensor x, Tensor? weight, Tensor? bias, Tensor mean, Tensor var, "
        "bool training, float eps, bool[3] output_mask) -> (Tensor, Tensor, Tensor)");
  // normalization: GroupNormFunction, x (N, C, ...) in G groups of C/G channels; mean/rstd: (N, G, 1) in the
  // accumulation dtype
  m.def("group_norm_fwd(Tensor x, Tensor? weight, Tensor? bias, int groups, float eps) -> (Tensor, Tensor, Tensor)");
  m.def("group_norm_bwd(Tensor grad_y, Tensor x, Tensor? weight, Tensor mean, Tensor rstd, int groups, "
        "bool[3] output_mask) -> (Tensor, Tensor, Tensor)");
  // pooling: MaxPool2dFunction, x (N, C, H, W) or (C, H, W); idx: the argmax within each window
  // (row-major, uint8 for windows of up to 256 elements, int32 beyond)
  m.def("max_pool2d_fwd(Tensor x, int[2] kernel_size, int[2] stride, int[2] padding, int[2] dilation, int ho, int wo)"
        " -> (Tensor, Tensor)");
  m.def("max_pool2d_bwd(Tensor grad_y, Tensor idx, SymInt[] x_size, int[2] kernel_size, int[2] stride, "
        "int[2] padding, int[2] dilation) -> Tensor");
  // pooling: AvgPool2dFunction, x (N, C, H, W) or (C, H, W); (ho, wo) the output size (ceil_mode resolved)
  m.def("avg_pool2d_fwd(Tensor x, int[2] kernel_size, int[2] stride, int[2] padding, bool count_include_pad, "
        "int? divisor_override, int ho, int wo) -> Tensor");
  m.def("avg_pool2d_bwd(Tensor grad_y, SymInt[] x_size, int[2] kernel_size, int[2] stride, int[2] padding, "
        "bool count_include_pad, int? divisor_override) -> Tensor");
  // activation: GELUFunction, SiLUFunction, ReLUFunction (mask: uint8, 1 bit per element)
  m.def("gelu_fwd(Tensor x, str approximate) -> Tensor");
  m.def("gelu_bwd(Tensor grad_y, Tensor x, str approximate) -> Tensor");
  m.def("silu_fwd(Tensor x) -> Tensor");
  m.def("silu_bwd(Tensor grad_y, Tensor x) -> Tensor");
  m.def("relu_fwd(Tensor x) -> Tensor");
  m.def("relu_mask(Tensor y) -> Tensor");
  m.def("mask_bwd(Tensor grad_y, Tensor mask, Tensor? scale) -> Tensor");
  // activation: SoftmaxFunction, LogSoftmaxFunction (the softmax dim is the last one; y the output)
  m.def("softmax_fwd(Tensor x) -> Tensor");
  m.def("log_softmax_fwd(Tensor x) -> Tensor");
  m.def("softmax_bwd(Tensor grad_y, Tensor y) -> Tensor");
  m.def("log_softmax_bwd(Tensor grad_y, Tensor y) -> Tensor");
  // activation: LeakyReLUFunction, ELUFunction, SoftplusFunction (saved: x), TanhFunction (the forward
  // is torch's) and SigmoidFunction (saved: y, the bwd's second argument)
  m.def("leaky_relu_fwd(Tensor x, float negative_slope) -> Tensor");
  m.def("leaky_relu_bwd(Tensor grad_y, Tensor x, float negative_slope) -> Tensor");
  m.def("elu_fwd(Tensor x, float alpha) -> Tensor");
  m.def("elu_bwd(Tensor grad_y, Tensor x, float alpha) -> Tensor");
  m.def("softplus_fwd(Tensor x, float beta, float threshold) -> Tensor");
  m.def("softplus_bwd(Tensor grad_y, Tensor x, float beta, float threshold) -> Tensor");
  m.def("tanh_fwd(Tensor x) -> Tensor");
  m.def("tanh_bwd(Tensor grad_y, Tensor y) -> Tensor");
  m.def("sigmoid_fwd(Tensor x) -> Tensor");
  m.def("sigmoid_bwd(Tensor grad_y, Tensor y) -> Tensor");
  // embedding: EmbeddingFunction, indices (*) int64/int32, weight (V, D); bwd: grad_W (V, D), the rows of
  // grad_y (*, D) summed per index, divided by the index's count under scale_grad_by_freq, 0 at padding_idx
  m.def("embedding_fwd(Tensor indices, Tensor weight) -> Tensor");
  m.def("embedding_bwd(Tensor grad_y, Tensor indices, int num_weights, int? padding_idx, bool scale_grad_by_freq)"
        " -> Tensor");
  // dropout: DropoutFunction (mask: bool in, 1 bit per element saved; backward: mask_bwd)
  m.def("dropout_fwd(Tensor x, Tensor mask, Tensor scale) -> Tensor");
  m.def("pack_mask(Tensor mask) -> Tensor");
  // loss: CrossEntropyFunction with class indices (logits (N, C); m, s: (N, 1) per-row max and
  // log-sum-exp of x - m, in the accumulation dtype)
  m.def("cross_entropy_fwd(Tensor x, Tensor target, Tensor? weight, str reduction, int ignore_index, "
        "float label_smoothing) -> (Tensor, Tensor, Tensor)");
  m.def("cross_entropy_bwd(Tensor grad_out, Tensor x, Tensor target, Tensor? weight, Tensor m, Tensor s, "
        "str reduction, int ignore_index, float label_smoothing) -> Tensor");
  // loss: MSELossFunction, L1LossFunction, HuberLossFunction (loss: mse | l1 | huber; huber's
  // delta and scale, smooth-L1 being huber with scale 1 / beta), BCEWithLogitsFunction; input and
  // target (and weight, pos_weight) of one shape. bwd returns dL/dd for d = x - t (grad_t = -dL/dd),
  // resp. grad_x
  m.def("pointwise_loss_fwd(Tensor x, Tensor t, str loss, str reduction, float delta, float scale) -> Tensor");
  m.def("pointwise_loss_bwd(Tensor grad_out, Tensor x, Tensor t, str loss, str reduction, float delta, "
        "float scale) -> Tensor");
  m.def("bce_with_logits_fwd(Tensor x, Tensor t, Tensor? weight, Tensor? pos_weight, str reduction) -> Tensor");
  m.def("bce_with_logits_bwd(Tensor grad_out, Tensor x, Tensor t, Tensor? weight, Tensor? pos_weight, "
        "str reduction) -> Tensor");
  // conv: ConvFunction, ConvTransposeFunction, the weight gradient of a 1d/2d convolution of x (N, C, *H)
  // with output gradient grad_y (N, O, *Ho); returns (O, C/groups, *kernel_size)
  m.def("conv_weight_grad(Tensor x, Tensor grad_y, int[] kernel_size, int[] stride, int[] padding, int[] dilation, "
        "int groups) -> Tensor");
  // ConvTransposeFunction's backward: (grad_x, grad_w, grad_b) of y = conv_transpose(x, weight, ...) + b,
  // those not in output_mask None; weight (C_in, C_out/groups, *k)
  m.def("conv_transpose_backward(Tensor grad_y, Tensor x, Tensor weight, int[] stride, int[] padding, "
        "int[] output_padding, int[] dilation, int groups, bool[3] output_mask) -> (Tensor, Tensor, Tensor)");
  // recurrent: LSTMFunction, GRUFunction, the time loop of one layer and direction. gi = W_ih x + b
  // of all steps (N, G*H); the steps as (offsets[s], sizes[s]) in the order visited; h0/c0/dh/dc: the
  // state (B, .). lstm fwd -> (Y, h_n, c_n, Hprev, Cprev, A, C), bwd -> (dA, dh_0, dc_0, dHo or
  // undefined without w_hr); gru fwd -> (Y, h_n, Hprev, A, HN), bwd -> (d gi, d gh, dh_0); RNNFunction (gi
  // includes b_hh; relu, else tanh): rnn fwd -> (Y, h_n), bwd -> (dA, dh_0).
  m.def("lstm_layer_fwd(Tensor gi, Tensor w_hh, Tensor? w_hr, Tensor h0, Tensor c0, int[] offsets, int[] sizes)"
        " -> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
  m.def("lstm_layer_bwd(Tensor dY, Tensor dh, Tensor dc, Tensor w_hh, Tensor? w_hr, Tensor Cprev, Tensor A, "
        "Tensor C, int[] offsets, int[] sizes) -> (Tensor, Tensor, Tensor, Tensor)");
  m.def("gru_layer_fwd(Tensor gi, Tensor w_hh, Tensor? b_hh, Tensor h0, int[] offsets, int[] sizes)"
        " -> (Tensor, Tensor, Tensor, Tensor, Tensor)");
  m.def("gru_layer_bwd(Tensor dY, Tensor dh, Tensor w_hh, Tensor Hprev, Tensor A, Tensor HN, int[] offsets, "
        "int[] sizes) -> (Tensor, Tensor, Tensor)");
  m.def("rnn_layer_fwd(Tensor gi, Tensor w_hh, Tensor h0, int[] offsets, int[] sizes, bool relu) -> (Tensor, Tensor)");
  m.def("rnn_layer_bwd(Tensor dY, Tensor dh, Tensor w_hh, Tensor Y, int[] offsets, int[] sizes, bool relu)"
        " -> (Tensor, Tensor)");
  // attention: ScaledDotProductAttentionFunction without a mask, groups or broadcast heads; q (..., L, E),
  // k (..., S, E), v (..., S, Ev) with the same leading dims, float32/float64; keep: the dropout keep mask
  // (..., L, S) (bool) or none, scaled by keep_scale. fwd -> (o, lse (..., L)), bwd -> (grad_q, grad_k, grad_v).
  m.def("attention_fwd(Tensor q, Tensor k, Tensor v, Tensor? keep, bool causal, float scale, float keep_scale)"
        " -> (Tensor, Tensor)");
  m.def("attention_bwd(Tensor grad_o, Tensor q, Tensor k, Tensor v, Tensor o, Tensor lse, Tensor? keep, bool causal, "
        "float scale, float keep_scale) -> (Tensor, Tensor, Tensor)");
}
