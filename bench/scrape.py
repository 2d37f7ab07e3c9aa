"""The bench as a monitoring system: GET /metrics and GET /status of a switch's admin
interface every interval, as a Prometheus server and ``switch top`` would, while the
switch is measured (the admin scenario)."""

from __future__ import annotations

import trio

from bench.model import AdminScrapes
from switch.admin.client import AdminClient, AdminUnavailable


class Scraper:
    def __init__(self, port: int, interval_s: float) -> None:
        self.interval_s = interval_s
        self._client = AdminClient(f"http://127.0.0.1:{port}", token=None)
        self.scrapes = 0
        self.failures = 0
        self.metrics_bytes = 0
        self.status_bytes = 0
        self.last_error: str | None = None

    async def run(self) -> None:
        """Scrapes until cancelled (the client blocks: each request in a thread)."""
        try:
            while True:
                began = trio.current_time()
                try:
                    metrics = await trio.to_thread.run_sync(self._client.get, "/metrics")
                    status = await trio.to_thread.run_sync(self._client.get, "/status")
                except AdminUnavailable as exc:
                    self.failures += 1
                    self.last_error = str(exc)
                else:
                    if metrics[0] == status[0] == 200:
                        self.scrapes += 1
                        self.metrics_bytes, self.status_bytes = len(metrics[1]), len(status[1])
                    else:
                        self.failures += 1
                        self.last_error = f"answered {metrics[0]} and {status[0]}"
                await trio.sleep_until(began + self.interval_s)
        finally:
            self._client.close()

    def summary(self) -> AdminScrapes:
        return AdminScrapes(
            interval_s=self.interval_s,
            scrapes=self.scrapes,
            failures=self.failures,
            metrics_bytes=self.metrics_bytes,
            status_bytes=self.status_bytes,
            last_error=self.last_error,
        )
