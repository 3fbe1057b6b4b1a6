"""Writers of tiny random-weight models in the exact on-disk layout of the real ones."""
