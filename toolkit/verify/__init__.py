"""Whether a model is still the same model, and how good it is: comparisons and their thresholds,
parity, golden folders, the layer-wise diagnosis, the embedded self-test, the metrics.

No torch at import: a `.pt` reference is opened through `toolkit.runtime` when one is named.
"""
