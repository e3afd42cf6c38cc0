"""The teaching layer's HTML: a self-contained page of headings, prose, tables and embedded PNG figures."""
from __future__ import annotations

import base64
import html
import os


def _img(path: str) -> str:
    with open(path, "rb") as f:
        data = base64.b64encode(f.read()).decode()
    return f'<figure><img alt="{html.escape(os.path.basename(path))}" src="data:image/png;base64,{data}">' \
           f'<figcaption>{html.escape(os.path.basename(path))}</figcaption></figure>'


def write_html(path: str, title: str, blocks: list) -> str:
    """A self-contained page: blocks are ("h2", text) | ("p", text) | ("pre", text) | ("img", png path) |
    ("table", (header, rows)). PNGs are embedded as base64. Written atomically."""
    out = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
           "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;line-height:1.4}"
           "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:2px 6px}"
           "pre{background:#f6f6f6;padding:.6em;overflow-x:auto;font-size:12px}figure{display:inline-block;margin:.5em}"
           ".ok{color:#070;font-weight:bold}.bad{color:#b00;font-weight:bold}</style></head><body>",
           f"<h1>{html.escape(title)}</h1>"]
    for kind, val in blocks:
        if kind == "img":
            out.append(_img(val))
        elif kind == "table":
            header, rows = val
            out.append("<table><tr>" + "".join(f"<th>{html.escape(str(h))}</th>" for h in header) + "</tr>")
            out += ["<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows]
            out.append("</table>")
        elif kind == "html":
            out.append(val)
        else:
            out.append(f"<{kind}>{html.escape(str(val))}</{kind}>")
    out.append("</body></html>")
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write("\n".join(out))
    os.replace(tmp, path)
    return path
