"""Argo Workflows objects authored with Hera from the one stage graph (contribflow.graph).

One module per object family, each holding its object at module level (so ``hera generate yaml``
finds it); ``python -m workflows.render`` writes them to ``workflows/rendered/``.
"""
