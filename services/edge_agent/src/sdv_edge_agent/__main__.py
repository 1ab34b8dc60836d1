"""`python -m sdv_edge_agent` starts the service."""

from sdv_edge_agent.app import main

main()
