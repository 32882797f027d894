"""Execution backends and sandboxing engines, each one module found by name.

Backends run whole plans (``local``, ``ray``); engines run single function instances for
the local backend's dispatcher (``inline``, ``process`` …).
"""

#: Names accepted as ``backend=`` (each a module here exporting ``Backend``).
BACKENDS = ("local", "ray")
#: Names accepted as ``engine=`` (each a module here exporting ``Engine``).
ENGINES = ("inline", "process")
