"""The review page's figures, as inline SVG and HTML made from counts (every label escaped).

Nothing here reads files: each function takes counts and returns markup.
"""

from __future__ import annotations

from html import escape

#: The colours of the page (kept in step with review.css).
NOW, AFTER, BELOW, ABOVE, LINE, INK, MUTED = "#9aa7b8", "#2a7f62", "#d59a2f", "#2a7f62", "#c0392b", "#1f2933", "#6b7785"
BAR_ROWS = 16  # genres shown in the bar chart; the rest are summed into "other"
MATRIX_SIZE = 12  # current and proposed genres in the matrix; the rest are "other"
OTHER = "(other)"


_VISIBLE = {ord(c): f"\u27e8U+{ord(c):04X}\u27e9" for c in "\u200e\u200f\u061c\u202a\u202b\u202c\u202d\u202e"
            "\u2066\u2067\u2068\u2069"}
_VISIBLE.update({ord("\n"): "\u21b5", ord("\r"): "\u21b5", ord("\t"): "\u21e5"})


def _t(x) -> str:
    """Text for the markup: escaped, with line breaks and direction marks shown as visible signs (as the
    table shows them)."""
    return escape(str(x).translate(_VISIBLE), quote=True)


def top_keys(counts: list[dict[str, int]], n: int) -> tuple[list[str], bool]:
    """The `n` keys with the largest counts over all dicts (ties by name), and whether some were left out."""
    total: dict[str, int] = {}
    for c in counts:
        for k, v in c.items():
            total[k] = max(total.get(k, 0), v)
    keys = sorted(total, key=lambda k: (-total[k], k.lower()))
    return keys[:n], len(keys) > n


def genre_bars(now: dict[str, int], after: dict[str, int], now_label: str, after_label: str) -> str:
    """Horizontal bars: each genre's file count now and after, side by side."""
    keys, more = top_keys([now, after], BAR_ROWS)
    rows = [(k, now.get(k, 0), after.get(k, 0)) for k in keys]
    if more:
        shown = set(keys)
        rows.append((OTHER, sum(v for k, v in now.items() if k not in shown),
                     sum(v for k, v in after.items() if k not in shown)))
    label_w, bar_w, bar_h, gap = 118, 250, 9, 7
    width = label_w + bar_w + 46
    top = 28
    height = top + len(rows) * (2 * bar_h + gap) + 6
    peak = max([1] + [max(a, b) for _, a, b in rows])
    out = [f'<svg class="chart" role="img" aria-label="genres {_t(now_label)} and {_t(after_label)}" '
           f'viewBox="0 0 {width} {height}" width="{width}" height="{height}">',
           f'<rect x="{label_w}" y="6" width="10" height="10" fill="{NOW}"/>'
           f'<text x="{label_w + 14}" y="15" class="legend">{_t(now_label)}</text>',
           f'<rect x="{label_w + 70}" y="6" width="10" height="10" fill="{AFTER}"/>'
           f'<text x="{label_w + 84}" y="15" class="legend">{_t(after_label)}</text>']
    if not rows:
        out.append(f'<text x="{label_w}" y="{top + 14}" class="muted">no genres</text>')
    for i, (name, a, b) in enumerate(rows):
        y = top + i * (2 * bar_h + gap)
        shown_name = name if len(name) <= 18 else name[:17] + "\u2026"
        out.append(f'<g class="bar"><title>{_t(name)}: {a} {_t(now_label)}, {b} {_t(after_label)}</title>'
                   f'<text x="{label_w - 8}" y="{y + bar_h + 4}" text-anchor="end" class="label">{_t(shown_name)}</text>')
        for j, (v, colour) in enumerate(((a, NOW), (b, AFTER))):
            w = 0 if v == 0 else max(1.5, bar_w * v / peak)
            yy = y + j * bar_h
            out.append(f'<rect x="{label_w}" y="{yy}" width="{w:.1f}" height="{bar_h - 1}" rx="1.5" fill="{colour}"/>'
                       f'<text x="{label_w + w + 4:.1f}" y="{yy + bar_h - 1.5}" class="num">{v}</text>')
        out.append("</g>")
    out.append("</svg>")
    return "".join(out)


def confidence_histogram(confidences: list[float], threshold: float, bins: int = 20) -> str:
    """A histogram of the top-genre confidences over 0-1, with the threshold as a vertical line."""
    counts = [0] * bins
    for c in confidences:
        counts[min(bins - 1, max(0, int(c * bins)))] += 1
    left, right, top, bottom, width, height = 40, 14, 22, 34, 440, 210
    plot_w, plot_h = width - left - right, height - top - bottom
    peak = max([1] + counts)
    out = [f'<svg class="chart" role="img" aria-label="confidence histogram" viewBox="0 0 {width} {height}" '
           f'width="{width}" height="{height}">',
           f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" stroke="{MUTED}"/>']
    for frac in (0.0, 0.5, 1.0):
        y = top + plot_h * (1 - frac)
        out.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" class="num">{round(peak * frac)}</text>'
                   f'<line x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" class="grid"/>')
    bw = plot_w / bins
    for i, n in enumerate(counts):
        h = plot_h * n / peak
        lo = i / bins
        colour = BELOW if lo + 1e-9 < threshold else ABOVE
        out.append(f'<rect class="hbar" x="{left + i * bw + 1:.1f}" y="{top + plot_h - h:.1f}" width="{bw - 2:.1f}" '
                   f'height="{h:.1f}" fill="{colour}"><title>{lo:.2f}-{lo + 1 / bins:.2f}: {n} files</title></rect>')
    for tick in (0, 0.25, 0.5, 0.75, 1):
        x = left + plot_w * tick
        out.append(f'<text x="{x:.1f}" y="{top + plot_h + 16}" text-anchor="middle" class="num">{tick:g}</text>')
    out.append(f'<text x="{left + plot_w / 2:.1f}" y="{height - 3}" text-anchor="middle" class="muted">'
               'confidence of the top genre</text>')
    x = left + plot_w * threshold
    anchor = "end" if threshold > 0.6 else "start"
    dx = -5 if anchor == "end" else 5
    out.append(f'<line class="threshold" x1="{x:.1f}" y1="{top - 8}" x2="{x:.1f}" y2="{top + plot_h}" stroke="{LINE}" '
               f'stroke-width="2" stroke-dasharray="5 3"/>'
               f'<text x="{x + dx:.1f}" y="{top - 2}" text-anchor="{anchor}" class="thr">'
               f'--min-confidence {threshold:g}</text>')
    out.append("</svg>")
    return "".join(out)


def matrix(pairs: dict[tuple[str, str], int]) -> tuple[str, list[str], list[str]]:
    """An HTML table of current genre (rows) against proposed genre (columns), disagreements marked.

    Returns the markup and the row and column labels: each counted cell carries `data-r`/`data-c`, the
    indexes of its labels (the page filters the table by them; "(other)" cells carry none)."""
    cur: dict[str, int] = {}
    prop: dict[str, int] = {}
    for (c, p), n in pairs.items():
        cur[c] = cur.get(c, 0) + n
        prop[p] = prop.get(p, 0) + n
    rows, more_r = top_keys([cur], MATRIX_SIZE)
    cols, more_c = top_keys([prop], MATRIX_SIZE)
    # put shared genres in the same order on both axes, so agreement runs down the diagonal
    cols = [c for c in rows if c in cols] + [c for c in cols if c not in rows]
    row_of = {k: i for i, k in enumerate(rows)}
    col_of = {k: i for i, k in enumerate(cols)}
    nr, nc = len(rows) + more_r, len(cols) + more_c
    grid = [[0] * nc for _ in range(nr)]
    for (c, p), n in pairs.items():
        grid[row_of.get(c, nr - 1)][col_of.get(p, nc - 1)] += n
    peak = max([1] + [v for r in grid for v in r])
    labels_r = rows + [OTHER] * more_r
    labels_c = cols + [OTHER] * more_c
    out = ['<table class="matrix"><thead><tr><th class="corner">current \u2193 / proposed \u2192</th>']
    out += [f'<th class="col"><span>{_t(c)}</span></th>' for c in labels_c]
    out.append("</tr></thead><tbody>")
    for i, r in enumerate(labels_r):
        out.append(f'<tr><th class="row">{_t(r)}</th>')
        for j, c in enumerate(labels_c):
            n = grid[i][j]
            if not n:
                out.append('<td class="zero"></td>')
                continue
            same = r == c and r != OTHER
            alpha = 0.12 + 0.78 * (n / peak) ** 0.5
            rgb = "42,127,98" if same else "192,57,43"
            dark = alpha > 0.55
            idx = "" if OTHER in (r, c) else f' data-r="{i}" data-c="{j}"'
            out.append(f'<td class="{"agree" if same else "differ"}{" dark" if dark else ""}"{idx} '
                       f'style="background:rgba({rgb},{alpha:.2f})" title="{_t(r)} \u2192 {_t(c)}: {n}">{n}</td>')
        out.append("</tr>")
    out.append("</tbody></table>")
    return "".join(out), rows, cols
