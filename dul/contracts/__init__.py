"""Smart-contract artifacts: `build` compiles them (dev time), `artifacts` reads the packaged
result (run time, no compiler needed)."""
