// Keeps an import's progress bar up to date from its progress endpoint; reloads the page
// when the step is over (the page then shows the report). Without this script the page
// refreshes itself (a <noscript> refresh), so nothing depends on it.
(function () {
  "use strict";
  var box = document.querySelector("[data-progress-url]");
  if (!box || !window.fetch) { return; }
  var url = box.getAttribute("data-progress-url");
  var bar = document.getElementById("import-bar");
  var text = document.getElementById("import-progress-text");
  function number(n) { return Number(n).toLocaleString("en-GB"); }
  function poll() {
    fetch(url, {headers: {"Accept": "application/json"}, credentials: "same-origin"})
      .then(function (response) { return response.ok ? response.json() : null; })
      .then(function (state) {
        if (!state) { window.setTimeout(poll, 5000); return; }
        bar.max = state.total || 1;
        bar.value = state.processed;
        bar.textContent = state.percent + "%";
        text.textContent = state.percent + "% · " + number(state.processed) + " of " + number(state.total) + " rows";
        if (state.finished || state.stalled) { window.location.reload(); return; }
        window.setTimeout(poll, 1000);
      })
      .catch(function () { window.setTimeout(poll, 5000); });
  }
  window.setTimeout(poll, 1000);
}());
