"""AnnData at the edges: validation, covariate registry, preprocessing, splits, dataset registry."""
