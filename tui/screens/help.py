"""Help: the keys of every screen and the few ideas behind lorapod."""

from __future__ import annotations

from rich.markdown import Markdown
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Header, Static

from tui.widgets.keyed import Footer

HELP = """
# lorapod

Everything is on the keyboard; the mouse is optional. **ctrl+p** opens the command palette, which reaches
every action. **q** leaves the dashboard — running jobs keep running, and lorapod catches up on them the
next time it opens.

## Anywhere
| key | does |
|---|---|
| n | new job (the wizard: dataset → preset → resources → review) |
| j | the jobs table |
| $ | costs and the monthly budget |
| t | registered training files |
| ? | this help |
| escape | back |

## Jobs
| key | does |
|---|---|
| enter | open the job in the monitor |
| space | mark the job (for compare and export) |
| m | compare the marked jobs |
| x | export the metrics of the marked jobs (or the one under the cursor) |
| o | write a client report (HTML) of the marked jobs (several: a comparison) or the one under the cursor |
| c / r | cancel / retry the job under the cursor |
| R | resume the interrupted job under the cursor (budget permitting) |
| p | try the job: one prompt to its base model and its adapter, replies side by side |
| v | rate the job's held-out replies blind: A or B, the adapter's revealed after each rating |
| s / S | sort by the next column / reverse the order (or click a header) |
| / | search names, models, presets and ids (escape clears it) |
| f | filter by dates, training file, model |
| [ / ] | previous / next page (50 jobs a page) |
| j / k, g / G, Home / End | down / up, first / last row (in every table) |

## Job monitor
| key | does |
|---|---|
| c | cancel: the engine finishes its step, saves a checkpoint and stops |
| r | retry with the same configuration, or the one its failure suggested (shown as a diff) |
| R | resume an interrupted job from its newest checkpoint (budget permitting) |
| p | try it: a prompt to the base model and the adapter, replies side by side (a pod's rate is asked first) |
| v | rate its held-out replies blind (A, B, tie or skip) |
| d | download a package; its sha256 and manifest are verified |
| y | copy the adapter's storage path |
| e | export the metrics history as CSV |
| o | write the job's client report (HTML, printable to PDF) |
| m | mark for compare |
| z | charts: maximise one, then the next; after the last, all of them again |
| w | chart window: all steps, or the last 1000, 200 or 50 |
| s | charts: EMA smoothing on or off (evaluations stay as measured) |
| l | charts: log scale on or off |

Charts tell series apart without colour: each has its own marker, named in the legend under the plot
(training loss a line, evaluations ◆). The loss chart marks ▲ where the eval loss rises while the training
loss falls: the adapter has begun to learn the training set rather than the task. On a short terminal the
monitor shows two taller charts; `z` brings up each of the others.

## Ideas
- **Status** is always an icon and a word: ◌ queued, ◔ provisioning, ◑ preprocessing / loading, ▶ training,
  ◕ evaluating, ⇡ uploading, ✔ completed, ✖ failed, ⊘ cancelled, ⚠ interrupted (its process or pod was
  lost: `R` resumes it from its newest checkpoint; the Interrupted filter lists them).
- **Cost** accrues while a job runs, from the provider's rate; a job that crosses the hard cap or its maximum
  duration is cancelled with the reason. Budget alerts appear at 80% and 95% of the month.
- **Datasets** are validated before a job starts: errors block it, warnings are shown. Conversations mode
  trains every assistant turn once, in about half the tokens of pairs mode.
"""


class HelpScreen(Screen[None]):
    BINDINGS = [Binding("escape,question_mark", "app.pop_screen", "Back", id="help.back", tooltip="Back")]

    def compose(self) -> ComposeResult:
        yield Header()
        with VerticalScroll():
            yield Static(Markdown(HELP), id="help-text")
        yield Footer()
