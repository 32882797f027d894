"""Build hook for the one C extension: the process engine's sandbox primitives (Linux only).

Everything else is configured in pyproject.toml.
"""

import sys

from setuptools import Extension, setup

ext_modules = []
if sys.platform.startswith("linux"):
    ext_modules.append(Extension("dandelion.backends._sandboxc", ["backends/_sandboxc.c"],
                                 extra_compile_args=["-O2", "-Wall"]))

setup(ext_modules=ext_modules)
