"""crmflow: CRM automation workflows run as durable Temporal workflows.

Layers, each importing only those before it (checked by tests/test_layers.py):
limits → templates → definitions → conditions → schedules → graphs → rules → store →
activities → worker → enrolling → triggers → services → dashboard → api → cli.
Pure code first (the definition format, conditions, schedules, pictures, the enrollment rules),
then the store (all SQL), the Temporal side (activities, the interpreter and its worker), starting
enrollments (enrolling) and the change feed (triggers), and the surfaces: services, the web
dashboard, HTTP, CLI.
"""
