"""Shadow and canary rollout (spec §13): the canary router (``router``)."""
