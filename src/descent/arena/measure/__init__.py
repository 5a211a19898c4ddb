"""The arena's second stage: measuring. One training run (``train``), the protocol that
lays out each optimizer's runs on a problem and tunes it (``protocol``), and the pool
that runs them (``runner``)."""
