"""Kernels behind the rules of ``torch_bp.ops``: ``cpu/`` (the Python side of ``csrc/cpu``).

A rule names the ops it calls in its ``compiled`` declaration (:class:`torch_bp.ops._rule.Rule`).
"""
