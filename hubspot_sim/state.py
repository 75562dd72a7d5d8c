"""Everything one running simulator holds, shared by its handlers through the app."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from .assoc_store import AssociationStore
from .config import SimConfig
from .limits import TokenBudget
from .stats import StatsRegistry
from .store import ObjectStore


class SimState:
    def __init__(
        self,
        config: SimConfig,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.clock = clock
        self.sleep = sleep  # every wait the simulator makes (latency, faults, slow answers)
        self.config = config
        self.objects = ObjectStore(clock)
        self.assocs = AssociationStore()
        self.reset()

    def reset(self) -> None:
        """Forget data, counters and windows; keep the configuration."""
        self.origin = self.clock()
        self.objects.clear()
        self.objects.index_delay_s = self.config.search_index_delay_s
        self.assocs.clear()
        self.stats = StatsRegistry(self.config.call_log_max)
        self.budgets: dict[str, TokenBudget] = {}
        self.rng = random.Random(self.config.seed)

    def set_config(self, config: SimConfig) -> None:
        reseed = config.seed != self.config.seed
        self.config = config
        self.objects.index_delay_s = config.search_index_delay_s
        if reseed:
            self.rng = random.Random(config.seed)

    def budget(self, hashed_token: str) -> TokenBudget:
        budget = self.budgets.get(hashed_token)
        if budget is None:
            budget = self.budgets[hashed_token] = TokenBudget(self.origin)
        return budget


STATE: web.AppKey[SimState] = web.AppKey("hubspot_sim_state", SimState)


def state_of(request: web.Request) -> SimState:
    return request.app[STATE]
