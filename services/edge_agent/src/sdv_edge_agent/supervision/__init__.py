"""The parts of an app supervisor (supervisor.py): its shared state and the steps it takes."""
