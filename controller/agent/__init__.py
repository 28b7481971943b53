"""Node agents: the simulated agent that lets the whole system run on one machine."""
