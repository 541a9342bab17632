"""The network on the PyTorch side: the literal model and its folded inference form, checkpoints,
the original author's files, the fixed camera's cut, the layer summary, BatchNorm re-estimation.

The only package of `toolkit/` that imports torch at module level; nothing the edge install runs
imports it (`tests/test_edge_install.py` proves it in a venv without torch).
"""
