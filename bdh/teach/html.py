"""The teaching layer's HTML: a self-contained page of headings, prose, tables and embedded PNG figures."""

from __future__ import annotations

import base64
import html
import os


def _img(path: str, caption: str | None = None) -> str:
    """A figure with the PNG embedded; `caption` (HTML allowed: it is ours, not the user's) or the file name."""
    with open(path, "rb") as f:
        data = base64.b64encode(f.read()).decode()
    name = html.escape(os.path.basename(path))
    cap = caption if caption is not None else name
    return (
        f'<figure><img alt="{name}" src="data:image/png;base64,{data}">'
        f'<figcaption>{cap} <span class="file">({name})</span></figcaption></figure>'
    )


def write_html(path: str, title: str, blocks: list) -> str:
    """A self-contained page: blocks are ("h2", text) | ("p", text) | ("pre", text) | ("img", png path or
    (path, caption html)) | ("table", (header, rows)) | ("html", raw html). PNGs are embedded as base64.
    Written atomically."""
    out = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
        "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;line-height:1.4}"
        ".wide{max-width:100%;overflow-x:auto}table{border-collapse:collapse;font-size:13px}"
        "td,th{border:1px solid #ccc;padding:2px 6px;overflow-wrap:anywhere}"
        "pre{background:#f6f6f6;padding:.6em;overflow-x:auto;font-size:12px}figure{margin:1.2em 0}"
        "figure img{max-width:100%}figcaption{max-width:900px;font-size:13px;color:#333}.file{color:#999}"
        "dl.notation dt{font-family:monospace;font-weight:bold;margin-top:.3em}dl.notation dd{margin-left:2em}"
        ".ok{color:#070;font-weight:bold}.bad{color:#b00;font-weight:bold}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    for kind, val in blocks:
        if kind == "img":
            out.append(_img(*val) if isinstance(val, tuple) else _img(val))
        elif kind == "table":
            header, rows = val
            out.append(
                "<div class='wide'><table><tr>" + "".join(f"<th>{html.escape(str(h))}</th>" for h in header) + "</tr>"
            )
            out += ["<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows]
            out.append("</table></div>")
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
