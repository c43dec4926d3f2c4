/* The type editor's script. Every page works without it; it adds
 * - live checking of the documents: as you type, the four documents are sent to
 *   /admin/types/<key>/check (JSON) and each problem is marked beside its line (the gutter)
 *   and listed under its document, as `tracker check` reports it;
 * - the gutter's line numbers follow the text and its scrolling;
 * - the live count of a task list being edited: its form is sent to .../tasklists/count and
 *   the count (or what is wrong with the filter) is shown beside it;
 * - on the assignment form, the role and field pickers a rule does not use are switched off
 *   (and so not sent), so choosing another rule cannot leave a contradiction behind. */
(function () {
  "use strict";

  function csrf(form) {
    var input = form.querySelector("input[name=csrf_token]");
    return input ? input.value : "";
  }

  function debounce(fn, ms) {
    var timer = null;
    return function () {
      if (timer) { clearTimeout(timer); }
      timer = setTimeout(fn, ms);
    };
  }

  /* -- documents ------------------------------------------------------------------------- */

  function lineCount(text) {
    var n = text.split("\n").length;
    return text.endsWith("\n") ? n - 1 : n;
  }

  function paintGutter(field, marks) {
    var textarea = field.querySelector("textarea");
    var gutter = field.querySelector(".gutter");
    var lines = Math.max(lineCount(textarea.value), 1);
    while (gutter.children.length < lines) { gutter.appendChild(document.createElement("li")); }
    while (gutter.children.length > lines) { gutter.removeChild(gutter.lastChild); }
    if (!marks) { return; }
    for (var i = 0; i < gutter.children.length; i++) {
      var li = gutter.children[i];
      var here = marks[i + 1];
      li.className = here ? "bad" : "";
      li.title = here ? here.join("; ") : "";
    }
  }

  function listProblems(field, problems) {
    var list = field.querySelector(".line-problems");
    list.textContent = "";
    problems.forEach(function (p) {
      var li = document.createElement("li");
      li.textContent = (p.line ? "Line " + p.line + ": " : "") + (p.pointer ? p.pointer + " " : "") + p.message;
      if (p.advice) {
        var advice = document.createElement("span");
        advice.className = "advice";
        advice.textContent = " " + p.advice;
        li.appendChild(advice);
      }
      list.appendChild(li);
    });
    field.classList.toggle("has-error", problems.length > 0);
  }

  function setUpDocuments(form) {
    var fields = Array.prototype.slice.call(form.querySelectorAll(".document-field"));
    var status = document.getElementById("live-status");
    var sent = 0;

    function check() {
      var body = {};
      fields.forEach(function (f) { var t = f.querySelector("textarea"); body[t.name] = t.value; });
      var mine = ++sent;
      fetch(form.getAttribute("data-check-url"), {
        method: "POST",
        headers: { "Content-Type": "application/json", "X-CSRFToken": csrf(form) },
        body: JSON.stringify(body),
        credentials: "same-origin"
      }).then(function (r) { return r.json(); }).then(function (answer) {
        if (mine !== sent || !answer.problems) { return; }
        fields.forEach(function (f) {
          var name = f.getAttribute("data-document");
          var own = answer.problems.filter(function (p) { return p.document === name; });
          var marks = {};
          own.forEach(function (p) { if (p.line) { (marks[p.line] = marks[p.line] || []).push(p.message); } });
          paintGutter(f, marks);
          listProblems(f, own);
        });
        var n = answer.problems.length;
        status.textContent = n ? n + (n === 1 ? " problem." : " problems.") : "No problems.";
      }).catch(function () { status.textContent = "Could not check just now; Save shows the problems."; });
    }

    var later = debounce(check, 450);
    fields.forEach(function (f) {
      var textarea = f.querySelector("textarea");
      var gutter = f.querySelector(".gutter");
      textarea.addEventListener("input", function () { paintGutter(f, null); later(); });
      textarea.addEventListener("scroll", function () { gutter.scrollTop = textarea.scrollTop; });
    });
  }

  /* -- task lists ------------------------------------------------------------------------ */

  function setUpTaskList(form) {
    var output = form.querySelector("output");
    var url = form.getAttribute("data-count-url");
    var sent = 0;
    var note = document.createElement("span");
    note.className = "error count-note";
    output.parentNode.appendChild(note);

    function count() {
      var data = new FormData(form);
      var mine = ++sent;
      output.textContent = "…";
      fetch(url, { method: "POST", body: data, headers: { "X-CSRFToken": csrf(form) }, credentials: "same-origin" })
        .then(function (r) { return r.json(); })
        .then(function (answer) {
          if (mine !== sent) { return; }
          output.textContent = answer.count === null || answer.count === undefined ? "—" : String(answer.count);
          note.textContent = answer.problems && answer.problems.length ? " " + answer.problems.join(" ") : "";
        })
        .catch(function () { output.textContent = "—"; });
    }

    var later = debounce(count, 350);
    form.addEventListener("input", later);
    form.addEventListener("change", later);
  }

  /* -- assignment -------------------------------------------------------------------------- */

  function setUpAssignment(form) {
    var role = form.querySelector("select[name=role]");
    var field = form.querySelector("select[name=field]");
    function follow() {
      var checked = form.querySelector("input[name=rule]:checked");
      var rule = checked ? checked.value : "";
      role.disabled = rule === "" || rule === "field";
      field.disabled = rule !== "field";
    }
    form.addEventListener("change", follow);
    follow();
  }

  document.addEventListener("DOMContentLoaded", function () {
    var assignment = document.getElementById("assignment-form");
    if (assignment) { setUpAssignment(assignment); }
    var docs = document.getElementById("documents-form");
    if (docs) { setUpDocuments(docs); }
    Array.prototype.forEach.call(document.querySelectorAll("form.tasklist-form"), setUpTaskList);
  });
})();
