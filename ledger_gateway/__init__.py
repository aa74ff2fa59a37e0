"""Access gateway: hospital access requests in, decisions out, signed transactions on chain."""
