"""Sandboxing engines: ``dandelion.backends.engines.<name>`` exports ``Engine``.

An engine is one module (``inline``) or one package whose modules are its parts
(``process``); :mod:`dandelion.runtime.registry` finds it by name.
"""
