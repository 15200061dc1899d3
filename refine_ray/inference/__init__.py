"""Batch refinement with Ray Data, the error metrics of the paper, and the reports."""
