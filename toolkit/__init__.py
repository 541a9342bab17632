"""toolkit: train, export, deploy and verify the EVA4 mask + depth network.

The package root imports nothing heavy: the edge install (numpy, Pillow, Typer, Rich,
onnx, onnxruntime) must be able to run exported models without PyTorch.
"""

__version__ = "0.1.0"
