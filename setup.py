"""Declares the one compiled extension, perfsdk._speedups; all metadata lives in pyproject.toml.

Set PERFSDK_NO_EXTENSIONS=1 at build time to build no extension: perfsdk then runs on its
pure-Python twin, perfsdk._speedups_py.
"""

import os

from setuptools import Extension, setup


def extensions() -> list[Extension]:
    if os.environ.get("PERFSDK_NO_EXTENSIONS") == "1":
        return []
    from Cython.Build import cythonize

    speedups = Extension(
        "perfsdk._speedups",
        ["ext/_speedups.pyx"],
        include_dirs=["ext"],
        # -ffp-contract=off: no fused multiply-add, so keys are bit-identical to the Python twin
        # whatever CFLAGS (e.g. -march=native) the builder adds.
        extra_compile_args=["-O3", "-ffp-contract=off"],
    )
    return cythonize(
        [speedups],
        # Generated C stays under build/, out of the tree and out of the sdist.
        build_dir="build/cython",
        compiler_directives={
            "language_level": 3,
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
        },
    )


setup(ext_modules=extensions())
