"""The rules in force, swapped atomically on SIGHUP or when the file changes.

A broken file never takes down a running gateway: it is validated first, and on error the old
rules stay, the problems are logged and counted.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time

from proxy.metrics import Metrics
from proxy.rules.loader import Rules, RulesError, format_problems, load_rules

log = logging.getLogger("proxy.rules")

WATCH_INTERVAL_S = 2.0


class RulesHolder:
    def __init__(self, path: str, rules: Rules, metrics: Metrics) -> None:
        self.path = path
        self.current = rules
        self._metrics = metrics
        self._mtime = self._stat()
        metrics.rules_loaded_timestamp.set(time.time())

    def _stat(self) -> float | None:
        try:
            return os.stat(self.path).st_mtime
        except OSError:
            return None

    def reload(self) -> bool:
        """Validate the file and swap it in; keep the old rules on any problem."""
        self._mtime = self._stat()
        try:
            rules = load_rules(self.path)
        except RulesError as exc:
            self._metrics.rules_reloads.labels("error").inc()
            log.error(
                "rules reload failed; keeping the rules in force",
                extra={"problems": format_problems(exc)},
            )
            return False
        except OSError as exc:
            self._metrics.rules_reloads.labels("error").inc()
            log.error(
                "rules file unreadable; keeping the rules in force", extra={"error": str(exc)}
            )
            return False
        self.current = rules
        self._metrics.rules_reloads.labels("ok").inc()
        self._metrics.rules_loaded_timestamp.set(time.time())
        log.info("rules reloaded", extra={"routes": len(rules.routes), "rules": len(rules.rules)})
        return True

    async def watch(self, interval_s: float = WATCH_INTERVAL_S) -> None:
        """Reload when the file's modification time changes (ConfigMap updates, editors)."""
        while True:
            await asyncio.sleep(interval_s)
            if self._stat() != self._mtime:
                self.reload()
