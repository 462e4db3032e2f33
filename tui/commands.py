"""The command palette (ctrl+p): every dashboard action, and each recent job's actions by id or name."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING

from textual.command import DiscoveryHit, Hit, Hits, Provider

from store.jobs import JobQuery, JobRow

if TYPE_CHECKING:
    from tui.app import LorapodApp

RECENT_JOBS = 30


class LorapodCommands(Provider):
    """Commands: (text, help, callback)."""

    @property
    def lorapod(self) -> LorapodApp:
        return self.app  # type: ignore[return-value]

    async def startup(self) -> None:
        app = self.lorapod
        self.commands: list[tuple[str, str, Callable[[], object]]] = [
            ("New job", "Start a training job with the wizard", app.action_new_job),
            ("Jobs", "The jobs table", app.action_show_jobs),
            ("Costs", "Spending, the monthly trend and the budget", app.action_show_costs),
            ("Datasets", "Registered training files and their validation", app.action_show_datasets),
            ("Help", "Keys and concepts", app.action_help),
            ("Compare marked jobs", "Overlaid losses, metrics and config differences", self._compare_marked),
            ("Clear marks", "Forget the jobs marked for compare", app.marked.clear),
        ]
        page = await self._recent()
        for row in page:
            short = row.short_id
            name = f" {row.name}" if row.name else ""
            job = str(row.id)
            self.commands += [
                (f"Open job {short}{name}", f"{row.status} · {row.base_model}", partial(app.open_job, job)),
                (f"Cancel job {short}{name}", "Checkpoint and stop it", partial(app.cancel_job, job)),
                (f"Retry job {short}{name}", "As it was, or as its failure suggests", partial(app.retry_job, job)),
                (f"Try job {short}{name}", "One prompt to its base model and its adapter", partial(app.try_job, job)),
                (f"Download a package of job {short}{name}", "adapter, full or deploy", partial(app.download, job)),
                (f"Export metrics of job {short}{name}", "CSV", partial(app.export_metrics, [row.id])),
                (f"Mark job {short}{name} for compare", "", partial(app.marked.add, job)),
                (f"Rate job {short}{name}", "Its replies blind, base against adapter", partial(app.open_rate, job)),
            ]
            if row.status == "interrupted":
                self.commands.append(
                    (
                        f"Resume job {short}{name}",
                        "Interrupted: from its newest checkpoint",
                        partial(app.resume_job, job),
                    )
                )

    async def _recent(self) -> list[JobRow]:
        page = await asyncio.to_thread(self.lorapod.backend.jobs, JobQuery(limit=RECENT_JOBS))
        return page.jobs

    def _compare_marked(self) -> None:
        marked = sorted(self.lorapod.marked)
        if len(marked) < 2:
            self.app.notify("Mark two or more jobs first (space in the jobs table)", severity="warning")
            return
        self.lorapod.open_compare(marked)

    async def discover(self) -> Hits:
        for text, help_text, callback in self.commands[:7]:
            yield DiscoveryHit(text, callback, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for text, help_text, callback in self.commands:
            score = matcher.match(text)
            if score > 0:
                yield Hit(score, matcher.highlight(text), callback, text=text, help=help_text)
