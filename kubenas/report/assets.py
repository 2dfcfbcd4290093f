"""The page's stylesheet and script, inlined into every report (Python strings rather than
package data files: nothing to install beside the code, nothing to fetch)."""

CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1d2430;
       margin: 0 auto; max-width: 1120px; padding: 24px; background: #fafbfc; }
h1 { margin: 0 0 8px; font-size: 26px; } h2 { font-size: 18px; margin: 0 0 10px; }
header, section { background: #fff; border: 1px solid #e1e4e8; border-radius: 8px;
                  padding: 16px 20px; margin-bottom: 18px; }
.facts { display: flex; flex-wrap: wrap; gap: 8px 28px; margin: 0; }
.facts dt { font-size: 11px; text-transform: uppercase; color: #6a737d; }
.facts dd { margin: 0; font-weight: 600; }
svg.figure { max-width: 100%; height: auto; font: 12px system-ui, sans-serif; }
.grid { stroke: #eaecef; } .tick { fill: #6a737d; } .label { fill: #444; }
.trial { stroke: #fff; stroke-width: 1; opacity: .9; }
.best { fill: none; stroke: #d73a49; stroke-width: 2.5; }
.baseline { fill: none; stroke: #586069; stroke-width: 2; stroke-dasharray: 6 4; }
.failed { fill: #959da5; font-size: 13px; }
.legend { color: #586069; font-size: 12px; }
.key { display: inline-block; width: 18px; height: 0; vertical-align: middle; }
.key.dot { width: 9px; height: 9px; border-radius: 50%;
           background: linear-gradient(90deg, #3168bd, #e6781e); }
.key.best { border-top: 3px solid #d73a49; } .key.baseline { border-top: 2px dashed #586069; }
rect.input { fill: #e8f1fb; stroke: #3168bd; } rect.conv { fill: #eef7ee; stroke: #2f8a3a; }
rect.maxpool, rect.avgpool { fill: #fff5e6; stroke: #d9822b; }
rect.output { fill: #f6e8f3; stroke: #9b3c88; }
rect.node { fill: #eef7ee; stroke: #2f8a3a; } rect.root { fill: #f6e8f3; stroke: #9b3c88; }
.name { font-weight: 600; fill: #1d2430; } .what { fill: #24292e; }
.note { fill: #6a737d; font-size: 11px; } .mark { fill: #b31d28; font-weight: 600; }
.edge { stroke: #6a737d; stroke-width: 1.5; } .skip { fill: none; stroke: #3168bd;
        stroke-width: 1.4; opacity: .75; }
table { border-collapse: collapse; font-size: 12.5px; }
th, td { border-bottom: 1px solid #eaecef; padding: 4px 9px; text-align: left;
         white-space: nowrap; }
th { background: #f6f8fa; position: sticky; top: 0; }
table.sortable th { cursor: pointer; user-select: none; }
table.sortable th.asc::after { content: " \\25B2"; } table.sortable th.desc::after { content: " \\25BC"; }
tr.failed td { color: #959da5; }
.scroll { max-height: 560px; overflow: auto; border: 1px solid #eaecef; }
.hint { color: #6a737d; font-size: 12px; margin: 0 0 6px; }
footer { color: #959da5; font-size: 11px; text-align: center; }
"""

# Click a header: sort the rows by that column, numerically when every non-empty cell is a
# number; click again to reverse. A link can ask for an order: report.html#sort=reward
# (ascending) or #sort=-cpu_seconds (descending).
SORTABLE_JS = """
document.querySelectorAll("table.sortable").forEach(function (table) {
  var heads = table.tHead.rows[0].cells;
  Array.prototype.forEach.call(heads, function (th, col) {
    th.addEventListener("click", function () {
      var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
      var up = !th.classList.contains("asc");
      var cells = rows.map(function (r) { return r.cells[col].textContent; });
      var numeric = cells.every(function (c) { return c === "" || !isNaN(Number(c)); });
      rows.sort(function (a, b) {
        var x = a.cells[col].textContent, y = b.cells[col].textContent;
        if (numeric) { x = x === "" ? -Infinity : Number(x); y = y === "" ? -Infinity : Number(y); }
        return (x < y ? -1 : x > y ? 1 : 0) * (up ? 1 : -1);
      });
      Array.prototype.forEach.call(heads, function (h) { h.classList.remove("asc", "desc"); });
      th.classList.add(up ? "asc" : "desc");
      rows.forEach(function (r) { body.appendChild(r); });
    });
  });
});
(function () {
  var asked = /sort=(-?)([A-Za-z_]+)/.exec(location.hash);
  var th = asked && document.querySelector('th[data-column="' + asked[2] + '"]');
  if (!th) { return; }
  th.click();
  if (asked[1] === "-") { th.click(); }
})();
"""
