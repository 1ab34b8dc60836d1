"""`python -m sdv_edge_agent` (or `sdv-agent`) starts the agent."""

from sdv_edge_agent.cli import main

main()
