"""reviews (non-core, tier sheddable): buyers rate products; while shed, readers get the cached summary."""
