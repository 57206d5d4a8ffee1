"""Training for irn_batch: data, the IRN objective, the optimisation loop and its Ray Train wrapper."""
