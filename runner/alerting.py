# Moved to db.alerts.deliver; kept until the callers being moved by the runner/ split import it from there.
from db.alerts.deliver import describe, evaluate_and_deliver  # noqa: F401
