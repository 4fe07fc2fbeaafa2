"""Datasets: pick a shipped sample or a file, and see rows as the model will (chat template applied,
prompt masked or not) with a histogram of token lengths."""

from __future__ import annotations

from collections import Counter
from typing import get_args

import ipywidgets as widgets

from workbench.data import SAMPLES
from workbench.schemas import DatasetPreview, PreviewRequest
from workbench.training.config import DatasetFormat, TrainingConfig
from workbench.ui.common import Panel, Plot, button, escape, muted

_FIELDS = TrainingConfig.model_fields
_LABEL = {"description_width": "9em"}
FILE = "file"


class DatasetPanel(Panel):
    """    panel = DatasetPanel()
    panel.source.value = "sharegpt"; panel.preview()      # rows, masked tokens and the histogram
    panel.source.value = "file"; panel.path.value = "mine.jsonl"; panel.preview()
    """

    def __init__(self, workbench=None):
        super().__init__(workbench)
        self.lengths: list[int] = []
        self.source = widgets.ToggleButtons(options=[*SAMPLES, FILE], value="alpaca",
                                            tooltip="A sample shipped with the workbench, or your own file")
        self.path = widgets.Text(
            description="file", style=_LABEL, layout=widgets.Layout(width="40em"),
            placeholder="under <home>/datasets: .jsonl, .json, .csv, .parquet or a folder",
            tooltip=_FIELDS["dataset_path"].description,
        )
        self.format = widgets.Dropdown(
            options=list(get_args(DatasetFormat)), value=_FIELDS["dataset_format"].default,
            description="format", style=_LABEL, tooltip=_FIELDS["dataset_format"].description,
        )
        self.model = widgets.Text(description="model", placeholder="the default model", style=_LABEL,
                                  tooltip="Whose tokenizer and chat template the rows go through")
        self.max_seq_length = widgets.IntText(
            value=_FIELDS["max_seq_length"].default, description="max seq length", style=_LABEL,
            tooltip=_FIELDS["max_seq_length"].description,
        )
        self.mask_prompt = widgets.Checkbox(value=_FIELDS["mask_prompt"].default, description="mask prompt",
                                            tooltip=_FIELDS["mask_prompt"].description)
        self.rows = widgets.BoundedIntText(value=3, min=1, max=50, description="rows shown", style=_LABEL)
        self.summary = widgets.HTML()
        self.samples = widgets.HTML()  # the rows as the model sees them
        self.plot = Plot(width=6.0, height=2.8)
        self.preview_button = button("Preview", self.preview, "primary")
        self.source.observe(lambda _: self._show_source(), names="value")
        self.widget = widgets.VBox([
            self.source, self.path,
            widgets.HBox([widgets.VBox([self.format, self.model]),
                          widgets.VBox([self.max_seq_length, self.rows, self.mask_prompt])]),
            self.preview_button, self.message, self.summary, self.samples, self.plot.image,
        ])
        self._show_source()

    def config(self) -> dict:
        """The data fields of a training configuration, as the form sets them."""
        own_file = self.source.value == FILE
        return {
            # With a file, `dataset` only hints at its format: custom lets it be detected.
            "dataset": "custom" if own_file else self.source.value,
            "dataset_path": (self.path.value.strip() or None) if own_file else None,
            "dataset_format": self.format.value, "max_seq_length": self.max_seq_length.value,
            "mask_prompt": self.mask_prompt.value, "model_name": self.model.value.strip() or None,
        }

    def preview(self) -> DatasetPreview | None:
        """Shows the first rows and the token length histogram; answers the preview."""
        config = self.config()
        self.say("")
        try:
            shown = self.workbench.preview_dataset(PreviewRequest(**config, rows=self.rows.value,
                                                                  token_lengths=True))
        except Exception as exc:
            self.summary.value = self.samples.value = ""
            self.fail(exc)
            return None
        self.lengths = shown.token_lengths
        self.summary.value = _summary(shown.summary)
        self.samples.value = "".join(
            _sample(i, row, config["max_seq_length"]) for i, row in enumerate(shown.rows, 1)
        )
        self.histogram(config["max_seq_length"], shown.summary["source"])
        return shown

    def histogram(self, max_seq_length: int, title: str = "") -> None:
        axes = self.plot.clear()
        axes.hist(self.lengths, bins=min(30, max(5, len(Counter(self.lengths)))), color="#4c72b0")
        axes.axvline(max_seq_length, color="#b00020", linestyle="--",
                     label=f"max_seq_length {max_seq_length}")
        longer = sum(n > max_seq_length for n in self.lengths)
        axes.set_xlabel("tokens per row (chat template applied)")
        axes.set_ylabel("rows")
        axes.set_title(f"{title}: {len(self.lengths)} rows, {longer} truncated", fontsize=10)
        axes.legend(fontsize=8)
        self.plot.render()

    def _show_source(self) -> None:
        self.path.layout.display = "" if self.source.value == FILE else "none"


def _summary(summary: dict) -> str:
    masked = "prompts masked (loss on the answers only)" if summary["mask_prompt"] else "nothing masked"
    test = f", {summary['test_rows']} test" if summary.get("test_rows") else ""
    return (f"<b>{escape(summary['source'])}</b>: {summary['rows']} rows ({summary['train_rows']} train, "
            f"{summary['valid_rows']} validation{test}), format {escape(summary['format'])}, {masked}")


def _sample(number: int, row: dict, max_seq_length: int) -> str:
    """The text the model sees; the masked prompt grey, the trained part in black."""
    text, trained = row["text"], row["trained_text"]
    if trained and text.endswith(trained):
        prompt = text[: len(text) - len(trained)]
        body = f'<span style="color:#999">{escape(prompt)}</span><span>{escape(trained)}</span>'
    else:  # decoding the two parts apart may differ at the seam: show both whole
        body = f"{escape(text)}\n<b>trained on:</b>\n{escape(trained)}"
    trained_tokens = min(row["tokens"], max_seq_length) - row["masked_tokens"]
    facts = (f"row {number}: {row['tokens']} tokens, {row['masked_tokens']} masked (prompt), "
             f"{trained_tokens} trained" + (", truncated" if row["truncated"] else ""))
    box = "white-space:pre-wrap;border:1px solid #ddd;padding:4px;margin:2px 0 8px"
    return f'<div>{muted(facts)}</div><pre style="{box}">{body}</pre>'
