"""Shadow and canary rollout (spec §13): the canary router (``router``); the statistical judge:
``counts`` (its validated input), ``judge`` (counts to a verdict record), ``cli`` (``mangaassist-release judge``),
``simulate`` (simulated steps for its tests and ``bench/judge_power.py``). Importing the package loads none of them."""
