"""Fake (meta) kernels of the ops in ``csrc/cpu/recurrent.cpp``: output shapes and dtypes, for
``torch.compile`` and FakeTensor. Registered by :func:`torch_bp.kernels.cpu.register_fakes`."""
from __future__ import annotations

def register(reg) -> None:
    """Register this family's fake kernels with ``reg`` (``torch.library.register_fake``)."""
    @reg("torch_bp::lstm_layer_fwd")
    def _(gi, w_hh, w_hr, h0, c0, offsets, sizes):
        n, h = gi.shape[0], gi.shape[1] // 4
        rows = [gi.new_empty((n, k)) for k in (h0.shape[1], h0.shape[1], h, 4 * h, h)]  # Y, Hprev, Cprev, A, C
        return rows[0], h0.new_empty(h0.shape), c0.new_empty(c0.shape), *rows[1:]

    @reg("torch_bp::lstm_layer_bwd")
    def _(dY, dh, dc, w_hh, w_hr, Cprev, A, C, offsets, sizes):
        return (A.new_empty(A.shape), dh.new_empty(dh.shape), dc.new_empty(dc.shape),
                None if w_hr is None else dY.new_empty(dY.shape))

    @reg("torch_bp::gru_layer_fwd")
    def _(gi, w_hh, b_hh, h0, offsets, sizes):
        n, h = gi.shape[0], gi.shape[1] // 3
        return (gi.new_empty((n, h)), h0.new_empty(h0.shape), gi.new_empty((n, h)), gi.new_empty((n, 3 * h)),
                gi.new_empty((n, h)))

    @reg("torch_bp::gru_layer_bwd")
    def _(dY, dh, w_hh, Hprev, A, HN, offsets, sizes):
        return A.new_empty(A.shape), A.new_empty(A.shape), dh.new_empty(dh.shape)

    @reg("torch_bp::rnn_layer_fwd")
    def _(gi, w_hh, h0, offsets, sizes, relu):
        return gi.new_empty(gi.shape), h0.new_empty(h0.shape)

    @reg("torch_bp::rnn_layer_bwd")
    def _(dY, dh, w_hh, Y, offsets, sizes, relu):
        return Y.new_empty(Y.shape), dh.new_empty(dh.shape)
