"""Tensor parallel: one job on N ranks under torchrun (launch), and the entry point each rank runs (rank)."""
