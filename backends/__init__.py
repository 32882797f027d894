"""Execution backends and sandboxing engines, each found by name, without a list.

Backends run whole plans: ``dandelion.backends.<name>`` (``local``, ``ray`` …) exports
``Backend``.  Engines run single function instances for a backend's workers:
``dandelion.backends.engines.<name>`` (``inline``, ``process`` …) exports ``Engine``.  A
module or a package of either kind is found by :mod:`dandelion.runtime.registry` from its
name alone, so adding one is adding one module or one folder.
"""
