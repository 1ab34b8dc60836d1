"""Application layer of the registry: command handlers (the shared command runner over
this service's deciders) and policies (event → command). Nothing yet beyond the shared `ping`."""
