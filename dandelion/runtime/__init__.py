"""The local runtime: dispatcher, engine pool, memory domains, backends registry and ``dd.run``."""
