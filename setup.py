"""Build script. Metadata lives in pyproject.toml; this file only adds the optional C++ CPU kernel.

``csrc/region_attention_cpu.cpp`` (``backend="cpp"``) is built as the extension module ``ale_kernels._C``
when torch is importable at build time (``pip install --no-build-isolation``, ``python setup.py build_ext
--inplace``) and the compiler works. Under pip's default build isolation torch is absent: it is on purpose
not a build requirement, since pip would download a multi-GB CUDA build into the isolated environment. Then
nothing is built here and ``ale_kernels/_cpp.py`` compiles the kernel on first use. A failed compile never
fails the install: the package falls back to the same first-use compile, then to the torch backend.
"""

from __future__ import annotations

import sys

from setuptools import setup

# The same flags as ale_kernels/_cpp.py (see there): no -march, the kernel picks its SIMD copy at run time.
CXX_FLAGS = ["-O3", "-fopenmp", "-ffp-contract=fast", "-Wno-psabi"]
LD_FLAGS = ["-fopenmp"]


def _optional_extension() -> dict:
    try:
        from torch.utils.cpp_extension import BuildExtension, CppExtension
    except ImportError:  # build isolation (or no torch at all): compiled on first use instead
        return {}

    class OptionalBuildExtension(BuildExtension):
        """``BuildExtension`` that warns instead of failing: the kernel is an optimisation, not a requirement."""

        def run(self) -> None:
            try:
                super().run()
            except Exception as exc:  # no compiler, a compiler torch rejects, a compile error
                print(f"warning: ale_kernels._C not built ({exc}); it will be compiled on first use", file=sys.stderr)

        def build_extension(self, ext) -> None:
            try:
                super().build_extension(ext)
            except Exception as exc:
                print(f"warning: {ext.name} not built ({exc}); it will be compiled on first use", file=sys.stderr)

    extension = CppExtension(
        "ale_kernels._C",
        ["csrc/region_attention_cpu.cpp"],
        include_dirs=["csrc"],
        extra_compile_args=CXX_FLAGS,
        extra_link_args=LD_FLAGS,
    )
    return dict(ext_modules=[extension], cmdclass={"build_ext": OptionalBuildExtension})


setup(**_optional_extension())
