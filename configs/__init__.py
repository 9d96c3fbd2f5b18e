"""The bundled run configs (YAML), installed as ``aligngym.configs``: ``aligngym list`` shows them and
``aligngym train NAME`` (``quickstart``, ``fisor/cpu``, ``cooperation/dp``) runs one from any folder."""
