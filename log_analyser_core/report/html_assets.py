"""The HTML report's own stylesheet and script, inlined into the page and allowed by their
SHA-256 hashes in its Content-Security-Policy. The script never parses markup: it only sorts,
filters and shows rows and panels the server-side renderer already escaped.
"""

CSS = """
:root{--bg:#0d1117;--panel:#161b22;--line:#30363d;--text:#c9d1d9;--dim:#8b949e;--accent:#3b82c4;
--critical:#ff4d4f;--high:#ff8c1a;--medium:#f2c200;--low:#3fa7d6;--info:#8c96a0}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--text);font:14px/1.45 system-ui,-apple-system,"Segoe UI",
"DejaVu Sans",sans-serif}
header{padding:18px 24px 6px}
h1{font-size:22px;margin:0 0 4px}
h2{font-size:16px;margin:0 0 10px}
h3{font-size:14px;margin:14px 0 6px;color:var(--dim);text-transform:uppercase;letter-spacing:.04em}
.meta{color:var(--dim);margin:0;overflow-wrap:anywhere}
main{padding:0 24px 24px}
.cards{display:flex;flex-wrap:wrap;gap:10px;margin:12px 0}
.card{background:var(--panel);border:1px solid var(--line);border-radius:6px;padding:10px 14px;min-width:120px}
.card b{display:block;font-size:22px}
.card span{color:var(--dim);font-size:12px}
.card.sev-critical b{color:var(--critical)}.card.sev-high b{color:var(--high)}
.card.sev-medium b{color:var(--medium)}.card.sev-low b{color:var(--low)}.card.sev-info b{color:var(--info)}
.charts{display:grid;grid-template-columns:repeat(auto-fit,minmax(320px,1fr));gap:10px;margin-bottom:14px}
.charts figure{margin:0;background:var(--panel);border:1px solid var(--line);border-radius:6px;padding:6px}
.charts figure.wide{grid-column:1/-1}
.charts img{width:100%;height:auto;display:block}
.notes{color:var(--medium)}
.layout{display:grid;grid-template-columns:minmax(0,2fr) minmax(280px,1fr);gap:14px;align-items:start}
.filters{display:flex;flex-wrap:wrap;gap:8px;margin-bottom:8px;align-items:center}
select,input{background:var(--panel);color:var(--text);border:1px solid var(--line);border-radius:4px;padding:5px 8px}
input[type=search]{min-width:220px}
#count{color:var(--dim)}
.tablewrap{overflow:auto;max-height:75vh;border:1px solid var(--line);border-radius:6px}
table{border-collapse:collapse;width:100%}
th,td{padding:5px 8px;border-bottom:1px solid var(--line);text-align:left;vertical-align:top}
th{background:var(--panel);white-space:nowrap}
#findings th{position:sticky;top:0;cursor:pointer;user-select:none}
th[aria-sort=ascending]::after{content:" \\25B2"}th[aria-sort=descending]::after{content:" \\25BC"}
td.num{text-align:right;font-variant-numeric:tabular-nums}
td.ip{font-family:ui-monospace,"DejaVu Sans Mono",monospace;overflow-wrap:anywhere;max-width:200px}
td.types{overflow-wrap:anywhere;min-width:90px}
td.reason{color:var(--dim);min-width:140px;overflow-wrap:anywhere}
tbody tr{cursor:pointer}
tbody tr:hover,tbody tr.selected{background:#1f2a37}
.sev{display:inline-block;border-radius:3px;padding:0 6px;font-size:12px;font-weight:600;color:#0d1117}
.sev-critical .sev,.sev.sev-critical{background:var(--critical)}.sev.sev-high{background:var(--high)}
.sev.sev-medium{background:var(--medium)}.sev.sev-low{background:var(--low)}.sev.sev-info{background:var(--info)}
.sev.none{background:transparent;color:var(--dim);font-weight:400}
aside{background:var(--panel);border:1px solid var(--line);border-radius:6px;padding:12px 14px;
position:sticky;top:10px;max-height:90vh;overflow:auto}
.detail dl{display:grid;grid-template-columns:auto 1fr;gap:2px 10px;margin:0}
.detail dt{color:var(--dim)}.detail dd{margin:0;overflow-wrap:anywhere}
.detail ul{margin:0;padding-left:18px}
.bars td{border:0;padding:2px 6px}.bars td:last-child{width:30%}
svg.bar{width:100%;height:14px}
svg.bar rect.client{fill:var(--critical)}svg.bar rect.typical{fill:var(--accent)}
pre{white-space:pre-wrap;overflow-wrap:anywhere;background:var(--bg);border:1px solid var(--line);
border-radius:4px;padding:6px 8px;font:12px/1.4 ui-monospace,"DejaVu Sans Mono",monospace;margin:4px 0}
.legend{color:var(--dim);font-size:12px}
.rebuilt{color:var(--medium);font-weight:600}
.legend i{display:inline-block;width:10px;height:10px;margin:0 4px 0 10px}
.legend i.client{background:var(--critical)}.legend i.typical{background:var(--accent)}
.empty{color:var(--dim)}
@media (max-width:900px){.layout{grid-template-columns:1fr}aside{position:static;max-height:none}}
"""

JS = """
(function () {
  "use strict";
  var table = document.getElementById("findings");
  var body = table.tBodies[0];
  var rows = Array.prototype.slice.call(body.rows);
  var controls = {sev: document.getElementById("f-sev"), type: document.getElementById("f-type"),
                  country: document.getElementById("f-country"), text: document.getElementById("f-text")};
  var count = document.getElementById("count");

  function cellValue(row, index, numeric) {
    var cell = row.cells[index];
    var raw = cell.getAttribute("data-v");
    if (raw === null) { raw = cell.textContent; }
    return numeric ? parseFloat(raw) : raw.toLowerCase();
  }

  function sortBy(th) {
    var index = th.cellIndex, numeric = th.getAttribute("data-type") === "num";
    var ascending = th.getAttribute("aria-sort") !== "ascending";
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (c) { c.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
    rows.sort(function (a, b) {
      var x = cellValue(a, index, numeric), y = cellValue(b, index, numeric);
      var order = x < y ? -1 : x > y ? 1 : 0;
      return ascending ? order : -order;
    });
    rows.forEach(function (row) { body.appendChild(row); });
  }

  function applyFilters() {
    var sev = controls.sev.value, type = controls.type.value, country = controls.country ? controls.country.value : "";
    var text = controls.text.value.trim().toLowerCase(), shown = 0;
    rows.forEach(function (row) {
      var ok = true;
      if (sev === "flagged") { ok = row.getAttribute("data-flagged") === "1"; }
      else if (sev !== "") { ok = row.getAttribute("data-flagged") === "1" && +row.getAttribute("data-sev") >= +sev; }
      if (ok && type) { ok = (" " + row.getAttribute("data-types") + " ").indexOf(" " + type + " ") >= 0; }
      if (ok && country) { ok = row.getAttribute("data-country") === country; }
      if (ok && text) { ok = row.textContent.toLowerCase().indexOf(text) >= 0; }
      row.hidden = !ok;
      if (ok) { shown += 1; }
    });
    count.textContent = shown + " of " + rows.length + " clients shown";
  }

  function showDetail(row) {
    var target = row.getAttribute("data-detail");
    Array.prototype.forEach.call(document.querySelectorAll("section.detail"), function (panel) {
      panel.hidden = panel.id !== target;
    });
    document.getElementById("detail-empty").hidden = true;
    rows.forEach(function (r) { r.classList.toggle("selected", r === row); });
  }

  Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th) {
    th.addEventListener("click", function () { sortBy(th); });
  });
  Object.keys(controls).forEach(function (key) {
    if (!controls[key]) { return; }   // no country filter without enrichment
    controls[key].addEventListener(key === "text" ? "input" : "change", applyFilters);
  });
  rows.forEach(function (row) {
    row.addEventListener("click", function () { showDetail(row); });
    row.addEventListener("keydown", function (event) { if (event.key === "Enter") { showDetail(row); } });
  });
  applyFilters();
  if (rows.length) { showDetail(rows[0]); }
})();
"""
