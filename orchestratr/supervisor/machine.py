"""The state machine built from ``states.TABLE``: the one place that imports ``transitions``.

One machine serves every app (``add_model`` per app). Its single callback hands each transition
on as plain values (``Transition``), so nothing else needs transitions' EventData.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import attrs
from transitions import EventData, Machine, MachineError

from orchestratr.supervisor.states import TABLE, AppState, Trigger


@attrs.frozen
class Transition:
    """A trigger that ran: ``dst`` is None for an internal one (already true, nothing moved)."""

    model: Any
    src: AppState
    dst: AppState | None
    trigger: Trigger
    kwargs: Mapping[str, Any]


OnTransition = Callable[[Transition], None]


class AppMachine(Machine):
    """A transitions machine that binds no methods to its models.

    transitions binds a trigger and a ``may_`` check per trigger, and an ``is_`` check per
    state, to every model: 37 functions, about 11 KiB per app, 1.1 MiB of a daemon with 100
    apps. Apps are driven by trigger through ``fire`` instead, and ``states.allowed`` answers
    "may it?" from the table.
    """

    def _checked_assignment(self, model: Any, name: str, func: Callable[..., Any]) -> None:
        """transitions' one hook for binding a function to a model: bind nothing."""

    def fire(self, model: Any, trigger: Trigger, **kwargs: Any) -> bool:
        """Run ``trigger`` on ``model``; False when no row allows it."""
        try:
            return bool(self.events[trigger.value].trigger(model, **kwargs))
        except MachineError:
            return False


def build_machine(on_transition: OnTransition) -> AppMachine:
    """One machine for all apps; ``on_transition`` runs after every accepted trigger."""

    def after(event: EventData) -> None:
        dest = event.transition.dest if event.transition is not None else None
        source = event.transition.source if event.transition is not None else event.state.name
        on_transition(Transition(
            model=event.model,
            src=AppState[source],
            dst=None if dest is None else AppState[dest],
            trigger=Trigger(event.event.name),
            kwargs=event.kwargs,
        ))

    return AppMachine(
        model=None,
        states=AppState,
        initial=AppState.stopped,
        transitions=[
            {
                "trigger": row.trigger.value,
                "source": list(row.source),
                "dest": row.dest,
                "conditions": [row.when] if row.when else [],
            }
            for row in TABLE
        ],
        send_event=True,
        auto_transitions=False,
        after_state_change=[after],
    )
