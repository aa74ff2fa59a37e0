"""The hospital's patient page: `dul patient serve` (see `app`)."""
