/* cc-auditor report: filter and sort the VM table, open <details> for links and printing.
   Reads the DOM only (no data is injected into this script), so the page's CSP can pin its hash.
   Query string: ?filter=TEXT&level=L1&cloud=aws&answer=yes&sort=COLUMN[-desc] */
(function () {
  "use strict";
  var table = document.getElementById("vm-table");
  var controls = {
    text: document.getElementById("f-text"),
    level: document.getElementById("f-level"),
    cloud: document.getElementById("f-cloud"),
    answer: document.getElementById("f-answer")
  };
  var counter = document.getElementById("f-count");
  var rows = table ? Array.prototype.slice.call(table.tBodies[0].rows) : [];
  var haystack = rows.map(function (r) { return r.textContent.toLowerCase(); });

  function apply() {
    if (!table) { return; }
    var q = controls.text.value.trim().toLowerCase();
    var lv = controls.level.value, cl = controls.cloud.value, an = controls.answer.value;
    var shown = 0;
    for (var i = 0; i < rows.length; i++) {
      var r = rows[i];
      var ok = (!q || haystack[i].indexOf(q) !== -1) &&
        (!lv || r.getAttribute("data-level") === lv) &&
        (!cl || r.getAttribute("data-cloud") === cl) &&
        (!an || r.getAttribute("data-answer") === an);
      r.hidden = !ok;
      if (ok) { shown++; }
    }
    counter.textContent = shown + " of " + rows.length + " VMs shown";
  }

  var collator = new Intl.Collator(undefined, { numeric: true, sensitivity: "base" });
  function sortBy(th, descending) {
    var headers = table.tHead.rows[0].cells;
    var col = Array.prototype.indexOf.call(headers, th);
    for (var h = 0; h < headers.length; h++) { headers[h].removeAttribute("aria-sort"); }
    th.setAttribute("aria-sort", descending ? "descending" : "ascending");
    var keyed = rows.map(function (r, i) { return [r.cells[col].textContent.trim(), i, r]; });
    keyed.sort(function (a, b) {
      var c = collator.compare(a[0], b[0]);
      return (descending ? -c : c) || a[1] - b[1];
    });
    var body = table.tBodies[0], frag = document.createDocumentFragment();
    keyed.forEach(function (k) { frag.appendChild(k[2]); });
    body.appendChild(frag);
  }

  function openAncestors(el) {
    for (; el; el = el.parentElement) {
      if (el.tagName === "DETAILS") { el.open = true; }
    }
  }
  function openTarget() {
    var id = decodeURIComponent(location.hash.slice(1));
    var el = id ? document.getElementById(id) : null;
    if (el) { openAncestors(el); el.scrollIntoView(); }
  }

  if (table) {
    ["input", "change"].forEach(function (ev) {
      Object.keys(controls).forEach(function (k) { controls[k].addEventListener(ev, apply); });
    });
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th) {
      th.addEventListener("click", function () {
        sortBy(th, th.getAttribute("aria-sort") === "ascending");
      });
    });
    var params = new URLSearchParams(location.search);
    controls.text.value = params.get("filter") || "";
    ["level", "cloud", "answer"].forEach(function (k) {
      var want = params.get(k);
      if (want && controls[k].querySelector('option[value="' + CSS.escape(want) + '"]')) {
        controls[k].value = want;
      }
    });
    var sort = params.get("sort");
    if (sort) {
      var desc = /-desc$/.test(sort), name = sort.replace(/-desc$/, "");
      var th = table.tHead.querySelector('th[data-col="' + CSS.escape(name) + '"]');
      if (th) { sortBy(th, desc); }
    }
    apply();
  }
  window.addEventListener("hashchange", openTarget);
  openTarget();

  var reopened = [];
  window.addEventListener("beforeprint", function () {
    Array.prototype.forEach.call(document.querySelectorAll("details:not([open])"), function (d) {
      d.open = true; reopened.push(d);
    });
  });
  window.addEventListener("afterprint", function () {
    reopened.forEach(function (d) { d.open = false; });
    reopened = [];
  });
})();
