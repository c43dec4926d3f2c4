// Keeps a background job's progress bar up to date from its progress endpoint (the section's
// data-progress-url) and reloads the page when the job is over: the page then shows the
// result. Without this script the page refreshes itself (a <noscript> refresh), so nothing
// depends on it. The endpoint words the progress ("text"), so this script serves every kind
// of job: imports, ILR exports, migrations.
(function () {
  "use strict";
  var box = document.querySelector("[data-progress-url]");
  if (!box || !window.fetch) { return; }
  var url = box.getAttribute("data-progress-url");
  var bar = box.querySelector("[data-progress-bar]");
  var text = box.querySelector("[data-progress-text]");
  var stage = box.querySelector("[data-progress-stage]");
  function show(state) {
    if (state.status === "queued") {
      bar.removeAttribute("value");  // an indeterminate bar: nothing has started yet
    } else {
      bar.max = state.total || 1;
      bar.value = state.processed;
    }
    bar.textContent = state.percent + "%";
    if (state.text) { text.textContent = state.text; }
    if (stage && state.stage) { stage.textContent = state.stage; }
  }
  function poll() {
    fetch(url, {headers: {"Accept": "application/json"}, credentials: "same-origin"})
      .then(function (response) { return response.ok ? response.json() : null; })
      .then(function (state) {
        if (!state) { window.setTimeout(poll, 5000); return; }
        show(state);
        if (state.finished || state.stalled) { window.location.reload(); return; }
        window.setTimeout(poll, 1000);
      })
      .catch(function () { window.setTimeout(poll, 5000); });
  }
  window.setTimeout(poll, 1000);
}());
