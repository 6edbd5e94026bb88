"""qtbench.baselines: the comparison algorithms (BC, IQL, Decision Transformer, CQL), one file each.

This folder is ``baselines/`` at the repository root, installed as the package
``qtbench.baselines`` (``[tool.setuptools.package-dir]`` in pyproject.toml): import it as
``qtbench.baselines``; there is no ``qtbench/baselines/`` folder and no top-level
``baselines`` module. Q-Transformer itself lives in the core, ``qtbench/q_transformer.py``.
"""
