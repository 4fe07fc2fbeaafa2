"""Playground: a prompt or a chat, sampling parameters, a provider, streamed output and what answered."""

from __future__ import annotations

import time

import ipywidgets as widgets

from workbench.providers.params import GenerateParams, SamplingParams
from workbench.providers.router import AllProvidersFailed
from workbench.schemas import GenerateResponse
from workbench.ui.common import Panel, button, escape, muted, table
from workbench.ui.providers import NAMES

_FIELDS = SamplingParams.model_fields
_LABEL = {"description_width": "7em"}
_REDRAW_S = 0.05  # streamed text is redrawn at most this often: one widget message per token floods


def _help(name: str) -> str:
    return _FIELDS[name].description or ""


class PlaygroundPanel(Panel):
    """    panel = PlaygroundPanel()
    panel.prompt.value = "Once upon a time"; result = panel.run()
    panel.mode.value = "chat"; panel.prompt.value = "Hello"; panel.run(); panel.run()  # a conversation
    """

    def __init__(self, workbench=None):
        super().__init__(workbench)
        self.history: list[dict] = []  # the chat so far: user and assistant turns
        self.mode = widgets.ToggleButtons(options=["prompt", "chat"], value="prompt",
                                          tooltips=["Plain completion: the text is continued as it is",
                                                    "Chat: the model's chat template is applied"])
        self.system = widgets.Textarea(placeholder="System message (optional)", rows=2,
                                       layout=widgets.Layout(width="100%"))
        self.transcript = widgets.HTML()
        self.prompt = widgets.Textarea(placeholder="Text to continue", rows=4,
                                       layout=widgets.Layout(width="100%"))
        self.provider = widgets.Dropdown(options=[("fallback chain", None)] + [(n, n) for n in NAMES],
                                         description="provider", style=_LABEL, tooltip=_help("provider"))
        self.model = widgets.Text(description="model", placeholder="the default local model", style=_LABEL,
                                  tooltip=_help("model"))
        self.max_tokens = widgets.BoundedIntText(value=_FIELDS["max_tokens"].default, min=1, max=131072,
                                                 description="max tokens", style=_LABEL,
                                                 tooltip=_help("max_tokens"))
        self.min_tokens = widgets.BoundedIntText(value=_FIELDS["min_tokens"].default, min=0, max=131072,
                                                 description="min tokens", style=_LABEL,
                                                 tooltip=_help("min_tokens"))
        self.temperature = widgets.FloatSlider(value=_FIELDS["temperature"].default, min=0.0, max=2.0,
                                               step=0.05, description="temperature", style=_LABEL,
                                               tooltip=_help("temperature"))
        self.top_p = widgets.FloatSlider(value=_FIELDS["top_p"].default, min=0.05, max=1.0, step=0.05,
                                         description="top p", style=_LABEL, tooltip=_help("top_p"))
        self.stop = widgets.TagsInput(allowed_tags=[], allow_duplicates=False, tooltip=_help("stop"))
        self.stream = widgets.Checkbox(value=True, description="stream", indent=False)
        self.output = widgets.HTML()  # the answer, as it arrives
        self.details = widgets.HTML()  # who answered, and every provider tried
        self.generate_button = button("Generate", self.run, "primary")
        self.new_chat_button = button("New chat", self.new_chat, tooltip="Forget the conversation so far")
        self.mode.observe(lambda _: self._show_mode(), names="value")
        self.widget = widgets.VBox([
            self.mode, self.system, self.transcript, self.prompt,
            widgets.HBox([widgets.VBox([self.provider, self.model, self.max_tokens, self.min_tokens]),
                          widgets.VBox([self.temperature, self.top_p,
                                        widgets.HBox([widgets.Label("stop"), self.stop]), self.stream])]),
            widgets.HBox([self.generate_button, self.new_chat_button]),
            self.output, self.details, self.message,
        ])
        self._show_mode()

    def params(self) -> dict:
        """The request the form describes, as GenerateParams takes it."""
        params = {
            "max_tokens": self.max_tokens.value, "min_tokens": self.min_tokens.value,
            "temperature": self.temperature.value, "top_p": self.top_p.value, "stop": list(self.stop.value),
            "provider": self.provider.value, "model": self.model.value.strip() or None,
        }
        if self.mode.value == "prompt":
            return params | {"prompt": self.prompt.value}
        system = [{"role": "system", "content": self.system.value}] if self.system.value.strip() else []
        return params | {"messages": system + self.history + [{"role": "user", "content": self.prompt.value}]}

    def run(self) -> GenerateResponse | None:
        """Generates (streamed when `stream` is ticked); answers the full result, None on an error."""
        self.say("")
        self.output.value, self.details.value = "", muted("generating…")
        self.generate_button.disabled = True
        try:
            params = GenerateParams(**self.params())
            result = self._stream(params) if self.stream.value else self.workbench.generate(params)
        except Exception as exc:
            self.details.value = _attempts(exc.attempts) if isinstance(exc, AllProvidersFailed) else ""
            self.fail(exc)
            return None
        finally:
            self.generate_button.disabled = False
        self._show_text(result.generated_text)
        self.details.value = _details(result)
        if self.mode.value == "chat":
            self.history += [{"role": "user", "content": self.prompt.value},
                             {"role": "assistant", "content": result.generated_text}]
            self.prompt.value = ""
            self._show_transcript()
        return result

    def new_chat(self) -> None:
        self.history = []
        self.output.value = self.details.value = ""
        self._show_transcript()

    # Helpers ------------------------------------------------------------------------------------

    def _stream(self, params: GenerateParams) -> GenerateResponse:
        pieces, shown_at = [], 0.0
        stream = self.workbench.stream(params.model_copy(update={"stream": True}))
        try:
            for piece in stream:
                pieces.append(piece)
                if time.monotonic() - shown_at > _REDRAW_S:
                    self._show_text("".join(pieces))
                    shown_at = time.monotonic()
            return stream.result()
        finally:
            stream.cancel()  # a reader that stops early frees the engine's batch slot

    def _show_text(self, text: str) -> None:
        self.output.value = f'<pre style="white-space:pre-wrap;margin:0">{escape(text)}</pre>'

    def _show_mode(self) -> None:
        chat = self.mode.value == "chat"
        for widget in (self.system, self.transcript, self.new_chat_button):
            widget.layout.display = "" if chat else "none"
        self.prompt.placeholder = "Your message" if chat else "Text to continue"
        self._show_transcript()

    def _show_transcript(self) -> None:
        self.transcript.value = "".join(
            f'<div><b>{escape(turn["role"])}</b>: <span style="white-space:pre-wrap">'
            f'{escape(turn["content"])}</span></div>'
            for turn in self.history
        )


def _details(result: GenerateResponse) -> str:
    summary = (
        f"<b>provider used</b>: {escape(result.provider_used)} · <b>model</b>: {escape(result.model)} "
        f"({escape(result.model_path)}) · <b>finish</b>: {escape(result.finish_reason)} · "
        f"<b>tokens</b>: {result.prompt_tokens} prompt + {result.completion_tokens} completion"
    )
    if result.latency_ms:
        summary += f" · {result.latency_ms:.0f} ms"
    warnings = "".join(f"<div>{muted('warning: ' + w)}</div>" for w in result.warnings)
    return f"<div>{summary}</div>{warnings}{_attempts(result.attempts)}"


def _attempts(attempts: list[dict]) -> str:
    if not attempts:
        return ""
    rows = [[a.get("provider"), a.get("outcome"), a.get("error"), a.get("message"), a.get("ms")]
            for a in attempts]
    return "<div><b>attempts</b></div>" + table(["provider", "outcome", "error", "message", "ms"], rows)
