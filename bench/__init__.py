"""Benchmarks for recstream: ``make bench`` (or ``python bench/run.py``) runs them all.

Each module exposes ``run(**params) -> dict``; every figure is a ratio to a baseline measured in
the same run, because the machine is shared and absolute numbers drift with its load.
"""
