"""Reading console pages in tests: table cells, chart data islands."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from typing import Any


class _Tables(HTMLParser):
    def __init__(self, table_id: str) -> None:
        super().__init__()
        self.table_id = table_id
        self.depth = 0  # >0 while inside the wanted table
        self.head: list[list[str]] = []
        self.body: list[list[str]] = []
        self.section = ""
        self.row: list[str] | None = None
        self.cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table":
            if self.depth:
                self.depth += 1
            elif dict(attrs).get("id") == self.table_id:
                self.depth = 1
            return
        if not self.depth:
            return
        if tag in ("div", "br", "p") and self.cell is not None:
            self.cell.append(" ")
        elif tag in ("thead", "tbody"):
            self.section = tag
        elif tag == "tr":
            self.row = []
        elif tag in ("td", "th"):
            self.cell = []

    def handle_endtag(self, tag: str) -> None:
        if not self.depth:
            return
        if tag == "table":
            self.depth -= 1
        elif tag in ("td", "th") and self.row is not None and self.cell is not None:
            self.row.append(" ".join("".join(self.cell).split()))
            self.cell = None
        elif tag == "tr" and self.row is not None:
            (self.head if self.section == "thead" else self.body).append(self.row)
            self.row = None

    def handle_data(self, data: str) -> None:
        if self.depth and self.cell is not None:
            self.cell.append(data)


def table(html: str, table_id: str) -> tuple[list[list[str]], list[list[str]]]:
    """(header rows, body rows) of the table with that id, each cell as its whitespace-collapsed text."""
    parser = _Tables(table_id)
    parser.feed(html)
    assert parser.head or parser.body, f"no table #{table_id} on the page"
    return parser.head, parser.body


def islands(html: str) -> dict[str, Any]:
    """Every JSON data island on the page, parsed, by id."""
    found = re.findall(r'<script type="application/json" id="([^"]+)">(.*?)</script>', html, re.S)
    return {key: json.loads(text) for key, text in found}


def flash_error(html: str) -> str:
    match = re.search(r'class="flash flash-error"[^>]*>(.*?)</div>', html, re.S)
    return match.group(1).strip() if match else ""
