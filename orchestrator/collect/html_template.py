"""The Jinja2 template of report.html: one file, no network (a Content-Security-Policy
that allows only inline styles, inline script and data: images), tables sortable by
a click on their header."""

TEMPLATE = r"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy"
      content="default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>Results: {{ experiment }}</title>
<style>
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1200px; padding: 0 1em; color: #222; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: 0.2em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.85em; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.5em; text-align: left; vertical-align: top; }
th { background: #f0f0f0; cursor: pointer; user-select: none; }
th[aria-sort="ascending"]::after { content: " ▲"; } th[aria-sort="descending"]::after { content: " ▼"; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.note { color: #555; font-size: 0.85em; max-width: 70em; }
.anomaly { color: #a00; } .problem { color: #8a5a00; }
.box { background: #fff4f4; border: 1px solid #e4b4b4; padding: 0.5em 1em; }
img { max-width: 100%; border: 1px solid #eee; }
details { margin: 0.5em 0; border: 1px solid #ddd; padding: 0.3em 0.8em; }
summary { cursor: pointer; font-weight: 600; }
.status-completed { color: #176317; } .status-failed, .status-corrupt { color: #a00; }
code { background: #f5f5f5; padding: 0 0.2em; }
</style>
</head>
<body>
<h1>Results: {{ experiment }}</h1>
<p>Collected {{ stamp }}. {{ counts }}.{% if baseline %} Baseline: <b>{{ baseline }}</b>.{% endif %}</p>
<nav>Sections: <a href="#anomalies">anomalies</a> · <a href="#tables">tables</a> · <a href="#plots">plots</a> ·
<a href="#configurations">configurations</a></nav>

<section id="anomalies">
<h2>Anomalies</h2>
<div class="box">
{% if anomalies %}<ul>{% for line in anomalies %}<li class="anomaly">{{ line }}</li>{% endfor %}</ul>
{% else %}<p>None.</p>{% endif %}
</div>
<h3>Problems</h3>
{% if problems %}<ul>{% for line in problems %}<li class="problem">{{ line }}</li>{% endfor %}</ul>
{% else %}<p>None.</p>{% endif %}
</section>

<section id="tables">
<h2>Tables</h2>
<p class="note">Click a column's header to sort by it. The same tables as summary.md and tables/*.md.</p>
{% for table in tables %}
<h3 id="table-{{ table.name }}">{{ table.title }}</h3>
{% if table.rows %}
<table class="sortable" data-table="{{ table.name }}">
<thead><tr>{% for column in table.columns %}<th>{{ column }}</th>{% endfor %}</tr></thead>
<tbody>{% for row in table.rows %}<tr>{% for cell, numeric in row %}<td{% if numeric %} class="num"{% endif %}>{{ cell }}</td>{% endfor %}</tr>{% endfor %}</tbody>
</table>
{% else %}<p>(no rows)</p>{% endif %}
{% if table.note %}<p class="note">{{ table.note }}</p>{% endif %}
{% endfor %}
</section>

<section id="plots">
<h2>Plots</h2>
{% for plot in plots %}<figure id="plot-{{ plot.name }}"><img alt="{{ plot.name }}" src="{{ plot.uri }}"><figcaption>{{ plot.name }}</figcaption></figure>
{% else %}<p>No plots (none had data, or PNG was not among the formats).</p>{% endfor %}
</section>

<section id="configurations">
<h2>Configurations</h2>
{{ configurations }}
</section>

<script>
(function () {
  function value(cell) {
    var text = cell.textContent.trim().replace(/[,×%†]/g, "").replace(/−/g, "-");
    var number = parseFloat(text);
    return isNaN(number) ? null : number;
  }
  document.querySelectorAll("table.sortable").forEach(function (table) {
    table.querySelectorAll("th").forEach(function (th, column) {
      th.addEventListener("click", function () {
        var ascending = th.getAttribute("aria-sort") !== "ascending";
        table.querySelectorAll("th").forEach(function (other) { other.removeAttribute("aria-sort"); });
        th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
        var body = table.tBodies[0];
        var rows = Array.prototype.slice.call(body.rows);
        rows.sort(function (a, b) {
          var x = a.cells[column], y = b.cells[column];
          var nx = value(x), ny = value(y), order;
          if (nx !== null && ny !== null) { order = nx - ny; }
          else if (nx !== null) { order = -1; } else if (ny !== null) { order = 1; }
          else { order = x.textContent.localeCompare(y.textContent); }
          return ascending ? order : -order;
        });
        rows.forEach(function (row) { body.appendChild(row); });
      });
    });
  });
})();
</script>
</body>
</html>
"""

# The configurations section's body, rendered on its own (while the plots are drawn) and put into TEMPLATE.
CONFIGURATIONS = r"""{% for config in configs %}
<details id="config-{{ loop.index }}" data-config="{{ config.id }}"{% if config.open %} open{% endif %}>
<summary>{{ config.id }} — {{ config.words }}{% if config.flags %} <span class="anomaly">({{ config.flags }})</span>{% endif %}</summary>
<p><b>Difference from the baseline {{ baseline_of(config) }}:</b>
{% if config.is_baseline %}this is the baseline.{% elif config.diff %}</p><ul>{% for key, theirs, ours in config.diff %}<li><code>{{ key }}</code>: {{ theirs }} → <b>{{ ours }}</b></li>{% endfor %}</ul><p>
{% else %}no knob differs.{% endif %}</p>
{% if config.curve %}<p>Training loss, every seed (one line a run):</p>{{ config.curve | safe }}{% endif %}
<table class="sortable"><thead><tr><th>run</th><th>owner</th><th>seed</th><th>state</th><th>{{ metric_label }}</th><th>anomalies</th></tr></thead>
<tbody>{% for run in config.runs %}<tr><td><a href="{{ run.href }}">{{ run.run_id }}</a></td><td>{{ run.owner }}</td><td class="num">{{ run.seed }}</td>
<td class="status-{{ run.status }}">{{ run.status }}</td><td class="num">{{ run.metric }}</td><td class="anomaly">{{ run.anomalies }}</td></tr>{% endfor %}</tbody></table>
</details>
{% endfor %}
"""
