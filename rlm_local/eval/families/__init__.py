"""Task families: each module has `VARIANTS` and `draft(rng, chars, shape, variant) -> Draft`."""
