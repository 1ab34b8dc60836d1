"""`python -m sdv_orchestrator` starts the service."""

from sdv_orchestrator.app import main

main()
