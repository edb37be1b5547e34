"""bftweb's app: DSPy BootstrapFinetune as a team workflow.

A page's URL names its code (jobs/urls.py): views/<family>.py asks and shows, forms/<family>.py
parses what people type, services/<topic>.py holds the rules and talks to Redis/RQ, models/ holds
the rows, tasks.py is every RQ entry point, and engine/ is plain Python around DSPy, transformers
and peft with no Django at all.
"""
