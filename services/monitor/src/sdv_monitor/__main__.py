"""`python -m sdv_monitor` starts the service."""

from sdv_monitor.app import main

main()
