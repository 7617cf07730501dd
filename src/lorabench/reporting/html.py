"""One self-contained, offline HTML page: CSS, tables (pandas `to_html`), inline PNGs.
"""
from __future__ import annotations

import base64
import html

_CSS = """body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1200px;margin:2em auto;
padding:0 1em;color:#222}table{border-collapse:collapse;margin:1em 0;font-size:14px}th,td{border:1px solid #ccc;
padding:4px 8px;text-align:right}th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
pre{background:#f7f7f7;padding:1em;white-space:pre-wrap;font-size:13px}.scroll{overflow-x:auto}.note{color:#8a5300}.fail{color:#b00020}
img{max-width:100%;margin:0.5em 0}.pair{display:flex;flex-wrap:wrap;gap:1.5em;align-items:flex-start}
.pair img{max-width:min(420px,100%)}h1{margin-bottom:0.2em}.sub{color:#666;margin-top:0}
.verdict{background:#eef6ee;border-left:4px solid #2e7d32;padding:0.6em 1em;font-size:16px}"""


def _html(title: str, sections: list[tuple[str, str]]) -> str:
    body = "".join(f"<h2>{html.escape(h)}</h2>\n{c}\n" if h else c for h, c in sections)
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{_CSS}</style></head><body>{body}</body></html>\n")


def _img(png: bytes, alt: str) -> str:
    return f"<img alt='{html.escape(alt)}' src='data:image/png;base64,{base64.b64encode(png).decode()}'>"
