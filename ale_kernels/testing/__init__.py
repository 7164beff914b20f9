"""What the test suite and the benchmarks share: the tolerance policy and the problem factories.

Installed with the package (as ``torch.testing`` is), so that a user's own kernels or backends can be held to
the same standard as this project's.
"""
