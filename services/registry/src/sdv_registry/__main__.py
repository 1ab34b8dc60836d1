"""`python -m sdv_registry` starts the service."""

from sdv_registry.app import main

main()
