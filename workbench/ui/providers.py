"""Providers: each one's configuration and health, configuring one, and the fallback order."""

from __future__ import annotations

from typing import get_args

import ipywidgets as widgets

from workbench.providers.params import ProviderName
from workbench.providers.store import DEFAULT_TIMEOUT_S, ProviderConfig
from workbench.schemas import ConfigureResponse, FallbackRequest, ProviderState
from workbench.ui.common import Markup, Panel, button, escape, muted, table, when

NAMES = list(get_args(ProviderName))
_WIDE = widgets.Layout(width="32em")
_LABEL = {"description_width": "7em"}


class ProvidersPanel(Panel):
    """    panel = ProvidersPanel()          # or ProvidersPanel(connect("http://host:8200"))
    panel.provider.value, panel.api_base.value = "ollama", "http://127.0.0.1:11434"
    panel.configure(); panel.set_fallback(["ollama", "local_mlx"])
    """

    def __init__(self, workbench=None):
        super().__init__(workbench)
        self.listing: dict[str, ProviderState] = {}
        self.table = widgets.HTML()
        self.provider = widgets.Dropdown(options=NAMES, value="ollama", description="provider", style=_LABEL)
        # A Password field: the key is masked while typed, and cleared once sent (see `configure`).
        self.api_key = widgets.Password(description="api key", placeholder="openai, anthropic, together",
                                        style=_LABEL, layout=_WIDE)
        self.model = widgets.Text(description="model", style=_LABEL, layout=_WIDE)
        self.api_base = widgets.Text(description="api base", style=_LABEL, layout=_WIDE)
        self.timeout = widgets.BoundedFloatText(value=DEFAULT_TIMEOUT_S, min=0.1, max=600, step=0.5,
                                                description="timeout (s)", style=_LABEL,
                                                tooltip="Seconds one call may take before the next provider "
                                                "is asked.")
        self.order = widgets.TagsInput(allowed_tags=NAMES, allow_duplicates=False,
                                       tooltip="Drag to reorder; requests that name no provider walk it.")
        self.chain = widgets.HTML()
        self.provider.observe(lambda _: self._load_provider(), names="value")
        self.configure_button = button("Configure", self.configure, "primary")
        self.remove_button = button("Remove", self.remove, "warning", "Forget this provider and its key")
        self.refresh_button = button("Refresh", self.refresh)
        self.fallback_button = button("Set order", self.set_fallback)
        self.default_button = button(
            "Default order", self.default_fallback,
            tooltip="Configured remote providers in the order configured, then local_mlx",
        )
        self.widget = widgets.VBox([
            widgets.HTML("<b>Providers</b>"), self.table, self.refresh_button,
            widgets.HTML("<b>Configure a provider</b>"),
            self.provider, self.api_key, self.model, self.api_base, self.timeout,
            widgets.HBox([self.configure_button, self.remove_button]),
            widgets.HTML("<b>Fallback order</b>"), self.order,
            widgets.HBox([self.fallback_button, self.default_button]), self.chain,
            self.message,
        ])
        self.refresh()

    # Actions (the buttons call these) -----------------------------------------------------------

    def refresh(self) -> None:
        first = not self.listing
        try:
            self.listing = self.workbench.providers()
            order = self.workbench.fallback().order
        except Exception as exc:
            self.fail(exc)
            return
        self.table.value = table(
            ["provider", "configured", "usable", "model", "api base", "key", "last success", "last error",
             "cooling down until"],
            [_row(name, info) for name, info in self.listing.items()],
        )
        self.order.value = [name for name in order if name in NAMES]  # the field takes known names only
        self.chain.value = muted("Requests that name no provider try: " + " → ".join(order))
        if first:
            self._load_provider()

    def configure(self) -> ConfigureResponse | None:
        provider = self.provider.value
        key = self.api_key.value or None
        # Cleared whatever happens: a widget's value is kept in the notebook's saved widget state.
        self.api_key.value = ""
        try:
            answer = self.workbench.configure_provider(ProviderConfig(
                provider=provider, api_key=key, model=self.model.value.strip() or None,
                api_base=self.api_base.value.strip() or None, timeout=self.timeout.value,
            ))
        except Exception as exc:
            self.fail(exc)
            return None
        self.refresh()
        shown_key = f", key {answer.api_key}" if answer.api_key else ""
        self.say(f"{provider} configured: model {answer.model}, api base {answer.api_base}{shown_key}")
        return answer

    def remove(self) -> None:
        try:
            self.workbench.remove_provider(self.provider.value)
        except Exception as exc:
            self.fail(exc)
            return
        self.refresh()
        self.say(f"{self.provider.value} removed")

    def set_fallback(self, order: list[str] | None = None) -> list[str] | None:
        """Sets the order shown in the field (or the one given); an empty field restores the default."""
        wanted = list(order if order is not None else self.order.value) or None
        try:
            chain = self.workbench.set_fallback(FallbackRequest(order=wanted).order).order
        except Exception as exc:
            self.fail(exc)
            return None
        self.refresh()
        self.say("fallback order: " + " → ".join(chain))
        return chain

    def default_fallback(self) -> list[str] | None:
        return self.set_fallback([])

    # Helpers ------------------------------------------------------------------------------------

    def _load_provider(self) -> None:
        """The selected provider's current model and api base, to edit (not another provider's)."""
        info = self.listing.get(self.provider.value)
        self.model.value = (info and info.model) or ""
        self.api_base.value = (info and info.api_base) or ""
        self.timeout.value = (info and info.timeout) or DEFAULT_TIMEOUT_S
        self.api_key.value = ""
        needs_key = info.needs_key if info else True
        self.api_key.disabled = not needs_key
        self.api_key.placeholder = (f"configured ({info.api_key}): type to replace" if info and info.api_key
                                    else "needed" if needs_key else "not needed")


def _row(name: str, info: ProviderState) -> list:
    error = info.health.last_error
    error_text = f"{error.get('error')}: {error.get('message', '')}"[:120] if error else ""
    return [
        name, _mark(info.configured), _mark(info.usable), info.model,
        info.api_base, info.api_key,  # the key as the workbench masks it: "...xyz" at most
        when(info.health.last_success),
        Markup(f'<span style="color:#b00020">{escape(error_text)}</span>') if error_text else "",
        when(info.health.cooling_down_until),
    ]


def _mark(flag) -> Markup:
    return Markup('<span style="color:#1a7f37">yes</span>' if flag else '<span style="color:#999">no</span>')
