"""`python -m sdv_packager` starts the service."""

from sdv_packager.app import main

main()
