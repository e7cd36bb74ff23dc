"""Model cards, plots and HTML reports."""

from lossdial.report.card import add_point, load_card, render_markdown

__all__ = ["add_point", "load_card", "render_markdown"]
