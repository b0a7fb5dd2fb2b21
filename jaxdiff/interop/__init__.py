"""Interoperability with PyTorch libraries (optional extra ``[interop]``: torch, diffusers); never imported
by the core."""
