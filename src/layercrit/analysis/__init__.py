"""Results back into tables and numbers: reading the results back and checking them against
their inputs (``readback``), tidy tables over models, layers and seeds (``aggregation``),
intervals, differences and correlations (``statistics``), the authors' published results
(``published``) and this study against them (``replication``)."""
