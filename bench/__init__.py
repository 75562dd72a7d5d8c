"""Scenario benchmarks of the gateway: `python -m bench [--quick] [--scenario NAME]`.

Scenarios (one module each): `peak` (the PRD's booking burst, direct vs SDK retries vs the
gateway), `overhead` (the gateway's pass-through, cache hit and `respond` against a minimal
aiohttp proxy and static server, and nginx when it can be had; Redis commands per call; a
py-spy profile), `scaleout` (1, 2 and 4 gateway processes on one Valkey), `budget` (bursts of
100, 300 and 1000 calls through 1 and 3 replicas), `portals` (admission cost per call for 1 to
1,000 credentials, one Valkey and a 3+3 cluster).
Results go to `bench/results/<scenario>.{json,md,png}`.

Load goes only to 127.0.0.1; every child process is stopped at the end, even on error; nothing
here asserts a timing.
"""
