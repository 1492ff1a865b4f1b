"""resfields: residual neural fields (ResFields, ICLR 2024) on several array backends."""
