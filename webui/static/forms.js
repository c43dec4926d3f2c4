/* Generated forms: the only script. Everything works without it; it adds
 * - conditional fields (if/then/else): elements with data-show-when are hidden, and their
 *   inputs disabled so they are not sent, while their condition does not hold;
 * - Enter in a search box presses its Find button (data-enter-clicks);
 * - focus on the error summary after a refused save;
 * - "Look up" buttons (x-lookup, see webui/forms.py lookup_button): ask /lookups/<name> with the
 *   fields the button names and offer the answers; picking one fills the fields it names; with
 *   "auto" the lookup also runs when the field changes; a lookup whose service was down is
 *   remembered in a hidden "lookup_unavailable" input, so the saved page can say so.
 * The format of data-show-when is documented in webui/forms.py (Clause.as_json). */
(function () {
  "use strict";

  function valueOf(form, name) {
    var inputs = form.querySelectorAll("[name]");
    var value = "";
    for (var i = 0; i < inputs.length; i++) {
      var el = inputs[i];
      if (el.name !== name || el.disabled) { continue; }
      if (el.type === "checkbox") { return el.checked ? "true" : "false"; }
      if (el.type === "radio") { if (el.checked) { value = el.value; } continue; }
      return (el.value || "").trim();
    }
    return value;
  }

  function clauseHolds(form, scope, clause) {
    var value = valueOf(form, scope + "-" + clause.field);
    var result = value === "" ? clause.empty : (clause.values === null || clause.values.indexOf(value) !== -1);
    return clause.negate ? !result : result;
  }

  function update(form) {
    var conditional = form.querySelectorAll("[data-show-when]");
    for (var i = 0; i < conditional.length; i++) {
      var el = conditional[i];
      var when = JSON.parse(el.getAttribute("data-show-when"));
      var scope = el.getAttribute("data-scope");
      var show = when.some(function (all) {
        return all.every(function (clause) { return clauseHolds(form, scope, clause); });
      });
      el.hidden = !show;
      var inputs = el.querySelectorAll("input, select, textarea, button");
      for (var j = 0; j < inputs.length; j++) {
        if (!show) {
          if (!inputs[j].disabled) { inputs[j].disabled = true; inputs[j].setAttribute("data-cond-disabled", ""); }
        } else if (inputs[j].hasAttribute("data-cond-disabled")) {
          inputs[j].disabled = false;
          inputs[j].removeAttribute("data-cond-disabled");
        }
      }
    }
  }

  function enhance(form) {
    update(form);
    form.addEventListener("change", function () { update(form); });
    form.addEventListener("input", function () { update(form); });
    var boxes = form.querySelectorAll("[data-enter-clicks]");
    for (var i = 0; i < boxes.length; i++) {
      boxes[i].addEventListener("keydown", function (event) {
        if (event.key !== "Enter") { return; }
        var button = document.getElementById(this.getAttribute("data-enter-clicks"));
        if (button) { event.preventDefault(); button.click(); }
      });
    }
  }

  function lookupQuery(form, button) {
    var scope = button.getAttribute("data-lookup-scope");
    var inputs = JSON.parse(button.getAttribute("data-lookup-inputs") || "{}");
    var params = [];
    Object.keys(inputs).forEach(function (param) {
      params.push(encodeURIComponent(param) + "=" + encodeURIComponent(valueOf(form, scope + "-" + inputs[param])));
    });
    return params.join("&");
  }

  var filling = false;  // true while a lookup's answer is put in: those changes start no lookup

  function fill(form, scope, values) {
    filling = true;
    try { fillFields(form, scope, values); } finally { filling = false; }
  }

  function fillFields(form, scope, values) {
    Object.keys(values).forEach(function (key) {
      var value = values[key];
      if (value !== null && typeof value === "object" && !Array.isArray(value)) {
        fillFields(form, scope + "-" + key, value);  // a nested object's fields (an address)
        return;
      }
      var el = form.querySelector("[name='" + scope + "-" + key + "']");
      if (!el || el.disabled) { return; }
      el.value = value === null || value === undefined ? "" : String(value);
      el.dispatchEvent(new Event("change", { bubbles: true }));
    });
  }

  /* Remember, in the form, that a lookup's service was down, so the page after the save can
   * say the item was saved without it; forget it once the lookup answers again. */
  function markUnavailable(form, name, down) {
    var marks = form.querySelectorAll("input[name='lookup_unavailable']");
    for (var i = 0; i < marks.length; i++) {
      if (marks[i].value === name) {
        if (!down) { marks[i].parentNode.removeChild(marks[i]); }
        return;
      }
    }
    if (down) {
      var mark = document.createElement("input");
      mark.type = "hidden";
      mark.name = "lookup_unavailable";
      mark.value = name;
      form.appendChild(mark);
    }
  }

  function say(box, text, kind) {
    var p = document.createElement("p");
    p.className = kind;
    p.textContent = text;
    box.appendChild(p);
  }

  /* auto: started by a change of the field (x-lookup "auto"), not by the button; the answers
   * are announced (aria-live) but focus stays where the person is typing. */
  function lookup(form, button, auto) {
    var box = document.getElementById(button.getAttribute("aria-controls"));
    var scope = button.getAttribute("data-lookup-scope");
    var name = button.getAttribute("data-lookup-name");
    // busy, not disabled: a disabled button would drop the focus of someone tabbing onto it
    if (button.getAttribute("aria-busy") === "true") { return; }
    button.setAttribute("aria-busy", "true");
    box.textContent = "";
    say(box, "Looking up…", "help");
    var url = button.getAttribute("data-lookup-url") + "?" + lookupQuery(form, button);
    fetch(url, { credentials: "same-origin", headers: { "Accept": "application/json" } })
      .then(function (response) {
        markUnavailable(form, name, response.status === 503 || response.status === 502);
        return response.json();
      })
      .then(function (body) {
        box.textContent = "";
        var results = body.results || [];
        if (body.message) { say(box, body.message + (body.advice ? " " + body.advice : ""), results.length ? "help" : "advice"); }
        if (!results.length) { if (!body.message) { say(box, "Nothing found; type the details in.", "advice"); } return; }
        var list = document.createElement("ul");
        list.className = "lookup-list";
        results.forEach(function (result) {
          var item = document.createElement("li");
          var choose = document.createElement("button");
          choose.type = "button";
          choose.className = "link";
          choose.textContent = result.label;
          choose.addEventListener("click", function () {
            fill(form, scope, result.values || {});
            box.textContent = "";
            say(box, "Filled in from: " + result.label, "help");
            button.focus();
          });
          item.appendChild(choose);
          list.appendChild(item);
        });
        box.appendChild(list);
        if (!auto) { list.querySelector("button").focus(); }
      })
      .catch(function () {
        markUnavailable(form, name, true);
        box.textContent = "";
        say(box, "The lookup did not answer; type the details in.", "advice");
      })
      .then(function () { button.removeAttribute("aria-busy"); });
  }

  function enhanceLookups(form) {
    var buttons = form.querySelectorAll("[data-lookup-url]");
    for (var i = 0; i < buttons.length; i++) {
      buttons[i].hidden = false;
      buttons[i].addEventListener("click", function () { lookup(form, this, false); });
      if (buttons[i].hasAttribute("data-lookup-auto")) { autoLookup(form, buttons[i]); }
    }
  }

  function autoLookup(form, button) {
    var field = document.getElementById(button.id.replace(/-lookup-button$/, ""));
    if (!field) { return; }
    var asked = (field.value || "").trim();
    field.addEventListener("change", function () {
      var value = (field.value || "").trim();
      if (value === "" || value === asked || filling) { asked = value; return; }
      asked = value;
      lookup(form, button, true);
    });
  }

  function start() {
    document.documentElement.classList.add("js");
    var forms = document.querySelectorAll("form[data-generated]");
    for (var i = 0; i < forms.length; i++) { enhance(forms[i]); enhanceLookups(forms[i]); }
    var summary = document.getElementById("error-summary");
    if (summary && !document.querySelector("[autofocus]")) { summary.focus(); }
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
